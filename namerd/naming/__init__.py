"""Naming on namerd's side: namers (fs, inet, registry) and the interpreter driving ``shared``."""
