"""The cube's extent and its tiles: whole blocks of output chunks on the global 0.05 deg grid.

Chunk boundaries lie at multiples of ``chunk_lat`` rows from 90 N and ``chunk_lon`` columns from 180 W, whatever
the bbox. A cube covers its bbox's cells expanded outward to whole chunks (clipped to the globe), so two cubes with
the same chunking share chunk boundaries, and every tile is a block of whole chunks: tiles written side by side
never touch the same chunk, so they cannot race.
"""

from dataclasses import dataclass

import numpy as np

from jobs import grid
from jobs.grid import Bbox


@dataclass(frozen=True)
class CubeExtent:
    """The global rows and columns a cube covers."""

    rows: slice
    cols: slice

    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes of the cube, north to south."""
        return grid.lat_coords()[self.rows]

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes of the cube, west to east."""
        return grid.lon_coords()[self.cols]

    @property
    def bbox(self) -> Bbox:
        """(W, S, E, N) of the cube's outer cell edges: `jobs.static.igbp(extent.bbox)` reads exactly its cells."""
        return (
            -180 + self.cols.start / grid.PER_DEG,
            90 - self.rows.stop / grid.PER_DEG,
            -180 + self.cols.stop / grid.PER_DEG,
            90 - self.rows.start / grid.PER_DEG,
        )


@dataclass(frozen=True)
class Tile:
    """One unit of engine work: a block of whole chunks, over the cube's whole period.

    ``id`` is ``r{chunk row:04d}_c{chunk column:04d}`` of the tile's first chunk on the global chunk grid, so it
    does not depend on the bbox. ``rows``/``cols`` index the global grid (for reading drivers); ``cube_rows`` and
    ``cube_cols`` index the cube's lat and lon (for writing the region).
    """

    id: str
    rows: slice
    cols: slice
    cube_rows: slice
    cube_cols: slice

    @property
    def shape(self) -> tuple[int, int]:
        """(lat, lon) size of the tile in cells."""
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start


def plan_tiles(bbox: Bbox, chunk_lat: int, chunk_lon: int, tile_chunks: int = 1) -> tuple[CubeExtent, list[Tile]]:
    """The cube extent of ``bbox`` (W, S, E, N) and its tiles of ``tile_chunks`` x ``tile_chunks`` chunks.

    Tiles come row-major (north to south, then west to east). Tiles on the extent's south or east edge hold fewer
    chunks where the extent ends first, and the globe's last chunks are partial where the chunk size does not
    divide 3600 or 7200; both still end exactly where the array ends, so they stay aligned.
    Raises DataError for a bad bbox (`jobs.grid.bbox_slices`) and ValueError for sizes below 1.
    """
    if min(chunk_lat, chunk_lon, tile_chunks) < 1:
        raise ValueError(f"chunk_lat {chunk_lat}, chunk_lon {chunk_lon} and tile_chunks {tile_chunks} must be >= 1")
    rows, cols = grid.bbox_slices(bbox)
    extent = CubeExtent(_whole_chunks(rows, chunk_lat, grid.N_LAT), _whole_chunks(cols, chunk_lon, grid.N_LON))
    tiles = [
        _tile(extent, row_block, col_block, chunk_lat, chunk_lon)
        for row_block in _blocks(extent.rows, chunk_lat * tile_chunks)
        for col_block in _blocks(extent.cols, chunk_lon * tile_chunks)
    ]
    return extent, tiles


def _whole_chunks(cells: slice, chunk: int, size: int) -> slice:
    """``cells`` expanded outward to chunk boundaries of the global grid, clipped to its ``size``."""
    return slice(cells.start // chunk * chunk, min(-(-cells.stop // chunk) * chunk, size))


def _blocks(cells: slice, step: int) -> list[slice]:
    """``cells`` cut into consecutive slices of ``step``, the last one possibly shorter."""
    return [slice(start, min(start + step, cells.stop)) for start in range(cells.start, cells.stop, step)]


def _tile(extent: CubeExtent, rows: slice, cols: slice, chunk_lat: int, chunk_lon: int) -> Tile:
    return Tile(
        id=f"r{rows.start // chunk_lat:04d}_c{cols.start // chunk_lon:04d}",
        rows=rows,
        cols=cols,
        cube_rows=slice(rows.start - extent.rows.start, rows.stop - extent.rows.start),
        cube_cols=slice(cols.start - extent.cols.start, cols.stop - extent.cols.start),
    )
