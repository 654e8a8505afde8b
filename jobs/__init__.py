"""The gridded upscaling engine (drivers in, daily GPP/RECO/NEE Zarr cubes out); built on ``tamrl.predict``."""
