"""Admission (spec → job) and the script store."""
