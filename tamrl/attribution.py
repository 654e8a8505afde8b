"""The attribution that CC-BY-4.0 asks to travel with everything derived from FLUXNET2015 data: checkpoints,
cubes and every answer. A module of its own, so that readers of cubes need not import torch with the checkpoints."""

FLUXNET_ATTRIBUTION = (
    "Trained on FLUXNET2015 data (CC-BY-4.0): Pastorello et al. (2020), The FLUXNET2015 dataset and the ONEFlux "
    "processing pipeline for eddy covariance data, Scientific Data 7:225, doi:10.1038/s41597-020-0534-3. "
    "This work used eddy covariance data acquired and shared by the FLUXNET community, including these networks: "
    "AmeriFlux, AfriFlux, AsiaFlux, CarboAfrica, CarboEuropeIP, CarboItaly, CarboMont, ChinaFlux, Fluxnet-Canada, "
    "GreenGrass, ICOS, KoFlux, LBA, NECC, OzFlux-TERN, TCOS-Siberia, and USCCC. The FLUXNET eddy covariance data "
    "processing and harmonization was carried out by the ICOS Ecosystem Thematic Center, AmeriFlux Management "
    "Project and Fluxdata project of FLUXNET, with the support of CDIAC, ICOS Ecosystem Thematic Center, and the "
    "OzFlux, ChinaFlux and AsiaFlux offices. MODIS MOD09GA v006 reflectance: Vermote and Wolfe, "
    "doi:10.5067/MODIS/MOD09GA.006 (extraction: A. Descals, CREAF, repository stineb/rsvi)."
)
