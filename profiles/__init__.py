"""Built-in hardware profiles (YAML). Installed as ``xinfer_sdk.builtin_profiles``; see docs/profiles.md."""
