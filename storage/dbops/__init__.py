"""Database operations behind `clarity db …`: setup, migrate, check, copy, drop-legacy, adopt."""
