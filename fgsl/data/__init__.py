"""Data: video reading now; annotation readers, window sampler and synthetic MEs in issue #4."""
