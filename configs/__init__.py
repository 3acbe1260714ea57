"""Example configurations, classification presets (`classify/`) and carrier simulator
scenarios (`scenarios/`), shipped inside the package as `bounceback.configs`."""
