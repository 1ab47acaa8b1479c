"""Dataset readers (ISIC 2019, HAM10000, synthetic), image loading, metadata encoding, splits."""
