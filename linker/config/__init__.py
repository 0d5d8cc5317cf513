"""The linker's configuration: Linkerd 1.x's YAML shape, validated; every default in one place."""
