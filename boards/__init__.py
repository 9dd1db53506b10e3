"""Thin board files (platform, clock, pins, link), imported by hw.build."""
