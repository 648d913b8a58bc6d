"""Datasets: registry (datasets.toml), download, raw readers, preprocessing to Parquet, stats."""
