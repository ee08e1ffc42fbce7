"""The EGD-CXR data layer: reader, DICOM decoding, gaze heatmaps, split, cache, synthetic twin.

Entry point: ``trainables.data.prepare.prepare_data(DataConfig) -> CachedData``. Nothing is
re-exported here on purpose: importing this package stays free of pandas and pydicom, so code that
only needs ``trainables.data.cached`` (and the spawned decoding workers) stays light.
"""
