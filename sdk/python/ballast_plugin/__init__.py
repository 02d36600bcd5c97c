"""ballast_plugin: write ballast process plugins in Python (placeholder until the SDK lands)."""
