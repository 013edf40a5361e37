"""TensorRT plugins, e.g. the FIFM FFT plugin (issue #6; not implemented yet)."""
