"""Cohort input: the synthetic simulator, image ingestion and checks, patient splits, pseudonyms."""
