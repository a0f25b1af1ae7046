"""The embedding cache: frozen-encoder extraction (torch or the ONNX/OpenVINO runtimes) into Zarr + Parquet, and
reading it back. Imports plumbing, data and models; never train or heads."""
