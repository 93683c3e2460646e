"""Side panels and overlays: the block palette, the block search popup, the inspector and the
minimap. Everything about a block shown here comes from its spec in the registry."""
