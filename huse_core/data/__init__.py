"""Data: reading a shop's catalogue, decoding photos, tokenising titles, the demo shop and upload checks."""
