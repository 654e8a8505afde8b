"""Write the HDF4-EOS fixtures of tests/data/modis_hdf/: small MOD09GA and MOD09CMG granules in the real layout.

No real MODIS granule ships with the project (../shared/data holds MOD09GA values at the towers only, as CSV), so
these files mimic what LP DAAC and earthaccess deliver, at a fraction of the size:

- the real file names (``MOD09GA.A2019182.h18v04.061.<production time>.hdf``, ``MOD09CMG.A2019182.061...hdf``);
- the real SDS names, types and attributes: ``sur_refl_b01_1`` .. ``sur_refl_b07_1`` (int16, ``scale_factor``
  0.0001, ``_FillValue`` -28672, ``valid_range`` -100..16000), ``state_1km_1`` (uint16, fill 65535, valid range
  0..57343), ``QC_500m_1`` (uint32, fill 787410671, valid range 0..4294966531), a ``num_observations_1km`` SDS
  tamrl does not read, and for MOD09CMG ``Coarse Resolution Surface Reflectance Band 1`` .. ``Band 7``,
  ``Coarse Resolution State QA`` and ``Coarse Resolution QA`` (given the MOD09GA QA attributes);
- the grids in the ``StructMetadata.0`` global attribute, in its ODL text layout (tab-indented GROUP/OBJECT
  blocks): ``MODIS_Grid_500m_2D`` and ``MODIS_Grid_1km_2D`` in ``GCTP_SNSOID`` on the 6371007.181 m sphere, and
  a ``GCTP_GEO`` grid with its corners in packed degrees (DDDMMMSSS.SS) for MOD09CMG.

What differs from a real granule: the grids are windows, not whole tiles (24 x 24 pixels of 500 m and 12 x 12 of
1 km from the north-west corner of tile h18v04, i.e. 50 N 0 E; 4 x 6 cells of 0.05 deg at 45.2-45.0 N, 10.0-10.3 E
instead of the global 3600 x 7200), their corners say so, and the HDF-EOS Vgroups and the CoreMetadata.0 and
ArchiveMetadata.0 attributes are left out (pyhdf's SD interface, which tamrl reads with, does not see them). The
values are chosen so that a cell's result can be worked out by hand; tests/test_ingest.py does that.

Run ``python tests/make_modis_hdf_fixture.py`` to write them again (they are deterministic).
"""

from pathlib import Path

import numpy as np
from pyhdf.SD import SD, SDC

OUT = Path(__file__).parent / "data" / "modis_hdf"
PRODUCED = "2020296001211"  # the production time in real names
SPHERE = "6371007.181000"
PIXEL_500M = 463.312716527778  # a tile is 1111950.519667 m = 2400 pixels of 500 m
WINDOW = 24  # 500 m pixels a side
TILE_H18V04 = (0.0, 5559752.598333)  # the tile's north-west corner [m]: 0 E, 50 N

# MOD09GA raw values: band k is 1000 k + 37 (day 182) or 1000 k + 137 (day 183) unless set below
CLEAR, CLOUDY, ADJACENT_CLOUD = 0b1000, 0b1001, 0b0010_0000_0000_1000  # state_1km: land + cloud bits
IDEAL, NOT_IDEAL = 1 << 30, (1 << 30) | 0b01  # QC_500m: adjacency correction done; MODLAND QA 00 or 01

REFLECTANCE = {"scale_factor": 0.0001, "_FillValue": -28672, "valid_range": (-100, 16000), "units": "reflectance"}
STATE = {"_FillValue": 65535, "valid_range": (0, 57343), "units": "bit field"}
QC = {"_FillValue": 787410671, "valid_range": (0, 4294966531), "units": "bit field"}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.hdf"):
        old.unlink()
    mod09ga("A2019182", *_day_182())
    mod09ga("A2019183", *_day_183())
    mod09cmg("A2019182")
    for path in sorted(OUT.glob("*.hdf")):
        print(f"{path.name}: {path.stat().st_size} bytes")


def _day_182() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Day 182: cell 49.975 N 0.025 E (rows 0-11, columns 0-7) has missing and special pixels; the 1 km state
    columns 4-7 (500 m columns 8-15, the cell at 0.075 E and beyond) are cloudy."""
    refl = np.stack([np.full((WINDOW, WINDOW), 1000 * k + 37, np.int16) for k in range(1, 8)])
    refl[0, 0, 0] = -28672  # B01 fill
    refl[0, 0, 1] = 20000  # B01 above valid_range: missing
    refl[0, 5, 5] = 3437  # B01 of one pixel
    refl[1, 11, 7] = -28672  # B02 fill: that pixel cannot be clear
    state = np.full((WINDOW // 2, WINDOW // 2), CLEAR, np.uint16)
    state[0, 0] = CLOUDY  # 500 m pixels (0-1, 0-1)
    state[1, 0] = ADJACENT_CLOUD  # 500 m pixels (2-3, 0-1)
    state[3, 3] = 65535  # fill: 500 m pixels (6-7, 6-7) have no state QA
    state[:, 4:8] = CLOUDY
    qc = np.full((WINDOW, WINDOW), IDEAL, np.uint32)
    qc[4, 4] = NOT_IDEAL
    return refl, state, qc


def _day_183() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Day 183: every pixel clear and ideal, band k = 1000 k + 137."""
    refl = np.stack([np.full((WINDOW, WINDOW), 1000 * k + 137, np.int16) for k in range(1, 8)])
    state = np.full((WINDOW // 2, WINDOW // 2), CLEAR, np.uint16)
    return refl, state, np.full((WINDOW, WINDOW), IDEAL, np.uint32)


def mod09ga(day: str, refl: np.ndarray, state: np.ndarray, qc: np.ndarray) -> None:
    sd = SD(str(OUT / f"MOD09GA.{day}.h18v04.061.{PRODUCED}.hdf"), SDC.WRITE | SDC.CREATE)
    x0, y0 = TILE_H18V04
    side = WINDOW * PIXEL_500M
    grids = [
        ("MODIS_Grid_1km_2D", WINDOW // 2, [("num_observations_1km", "DFNT_INT8"), ("state_1km_1", "DFNT_UINT16")]),
        ("MODIS_Grid_500m_2D", WINDOW, [*((f"sur_refl_b0{k}_1", "DFNT_INT16") for k in range(1, 8)),
                                        ("QC_500m_1", "DFNT_UINT32")]),
    ]  # fmt: skip
    corners = f"UpperLeftPointMtrs=({x0:.6f},{y0:.6f})", f"LowerRightMtrs=({x0 + side:.6f},{y0 - side:.6f})"
    text = _struct_metadata([(name, size, size, *corners, "GCTP_SNSOID", f"({SPHERE},0,0,0,0,0,0,0,0,0,0,0,0)",
                              fields) for name, size, fields in grids])  # fmt: skip
    sd.attr("StructMetadata.0").set(SDC.CHAR, text)
    _sds(sd, "num_observations_1km", np.ones(state.shape, np.int8), "MODIS_Grid_1km_2D", {"_FillValue": -1})
    _sds(sd, "state_1km_1", state, "MODIS_Grid_1km_2D", STATE)
    for k in range(7):
        _sds(sd, f"sur_refl_b0{k + 1}_1", refl[k], "MODIS_Grid_500m_2D", REFLECTANCE)
    _sds(sd, "QC_500m_1", qc, "MODIS_Grid_500m_2D", QC)
    sd.end()


def mod09cmg(day: str) -> None:
    """4 x 6 cells: band k of cell (i, j) is 1000 k + 10 (6 i + j); (0, 0) has B01 fill, (1, 2) a B03 above the
    valid range; cell (2, 3) is cloudy, cell (3, 5) has MODLAND QA 01."""
    sd = SD(str(OUT / f"MOD09CMG.{day}.061.{PRODUCED}.hdf"), SDC.WRITE | SDC.CREATE)
    rows, cols = 4, 6
    names = [f"Coarse Resolution Surface Reflectance Band {k}" for k in range(1, 8)]
    fields = [*((name, "DFNT_INT16") for name in names), ("Coarse Resolution State QA", "DFNT_UINT16"),
              ("Coarse Resolution QA", "DFNT_UINT32")]  # fmt: skip
    # 10.0 E 45.2 N (45 deg 12 min) to 10.3 E (10 deg 18 min) 45.0 N, in packed degrees DDDMMMSSS.SS
    corners = "UpperLeftPointMtrs=(10000000.000000,45012000.000000)", "LowerRightMtrs=(10018000.000000,45000000.000000)"
    text = _struct_metadata([("MOD09CMG", cols, rows, *corners, "GCTP_GEO", "(0,0,0,0,0,0,0,0,0,0,0,0,0)", fields)])
    sd.attr("StructMetadata.0").set(SDC.CHAR, text)
    index = np.arange(rows * cols).reshape(rows, cols)
    for k, name in enumerate(names, start=1):
        raw = (1000 * k + 10 * index).astype(np.int16)
        if k == 1:
            raw[0, 0] = -28672
        if k == 3:
            raw[1, 2] = 16500
        _sds(sd, name, raw, "MOD09CMG", REFLECTANCE)
    state = np.full((rows, cols), CLEAR, np.uint16)
    state[2, 3] = CLOUDY
    qa = np.full((rows, cols), IDEAL, np.uint32)
    qa[3, 5] = NOT_IDEAL
    _sds(sd, "Coarse Resolution State QA", state, "MOD09CMG", STATE)
    _sds(sd, "Coarse Resolution QA", qa, "MOD09CMG", QC)
    sd.end()


_TYPES = {np.dtype(np.int8): SDC.INT8, np.dtype(np.int16): SDC.INT16, np.dtype(np.uint16): SDC.UINT16,
          np.dtype(np.uint32): SDC.UINT32}  # fmt: skip


def _sds(sd: SD, name: str, values: np.ndarray, grid: str, attrs: dict) -> None:
    """One compressed SDS with the real dimension names (YDim:grid, XDim:grid) and attributes."""
    kind = _TYPES[values.dtype]
    sds = sd.create(name, kind, values.shape)
    sds.setcompress(SDC.COMP_DEFLATE, value=9)
    sds.dim(0).setname(f"YDim:{grid}")
    sds.dim(1).setname(f"XDim:{grid}")
    for key, value in attrs.items():
        if key == "units":
            sds.attr(key).set(SDC.CHAR, value)
        elif key == "scale_factor":
            sds.attr(key).set(SDC.FLOAT64, value)
        else:
            sds.attr(key).set(kind, list(value) if isinstance(value, tuple) else value)
    sds[:] = values
    sds.endaccess()


def _struct_metadata(grids: list[tuple]) -> str:
    """``StructMetadata.0`` ODL text: one GROUP=GRID_n per (name, xdim, ydim, upper left, lower right, projection,
    ProjParams, fields), laid out (tabs, order of keys) as in LP DAAC's granules."""
    lines = ["GROUP=SwathStructure", "END_GROUP=SwathStructure", "GROUP=GridStructure"]
    for n, (name, xdim, ydim, upper_left, lower_right, projection, params, fields) in enumerate(grids, start=1):
        lines += [
            f"\tGROUP=GRID_{n}", f'\t\tGridName="{name}"', f"\t\tXDim={xdim}", f"\t\tYDim={ydim}",
            f"\t\t{upper_left}", f"\t\t{lower_right}", f"\t\tProjection={projection}", f"\t\tProjParams={params}",
            "\t\tSphereCode=-1", "\t\tGridOrigin=HDFE_GD_UL", "\t\tGROUP=Dimension", "\t\tEND_GROUP=Dimension",
            "\t\tGROUP=DataField",
        ]  # fmt: skip
        for i, (field, kind) in enumerate(fields, start=1):
            lines += [
                f"\t\t\tOBJECT=DataField_{i}", f'\t\t\t\tDataFieldName="{field}"', f"\t\t\t\tDataType={kind}",
                '\t\t\t\tDimList=("YDim","XDim")', f"\t\t\tEND_OBJECT=DataField_{i}",
            ]  # fmt: skip
        lines += ["\t\tEND_GROUP=DataField", "\t\tGROUP=MergedFields", "\t\tEND_GROUP=MergedFields",
                  f"\tEND_GROUP=GRID_{n}"]  # fmt: skip
    lines += ["END_GROUP=GridStructure", "GROUP=PointStructure", "END_GROUP=PointStructure", "END", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
