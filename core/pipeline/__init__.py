"""The audio stages and the configuration they read."""
