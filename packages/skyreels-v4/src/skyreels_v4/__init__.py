"""The composed SkyReels-V4 model, pipelines, Lightning modules and recipes, data, metrics and CLI."""

__all__: list[str] = []
