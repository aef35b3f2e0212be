"""Python dependencies of scripts: import inference, lock resolution with uv, the environment cache."""
