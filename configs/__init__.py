"""Packaged configuration: the model catalogue (models.toml) and named presets (presets.toml)."""
