"""Posts: the contract, readers (Parquet, CSV, JSONL, SMPD), ingest, splits and synthetic data."""
