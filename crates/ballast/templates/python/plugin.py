#!/usr/bin/env python3
"""The `{{name}}` plugin for ballast (placeholder until the Python SDK's template lands)."""

import ballast_plugin

if __name__ == "__main__":
    raise SystemExit("{{name}}: this template is a placeholder; see ballast_plugin")
