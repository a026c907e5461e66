"""The side-API agent containers call (DESIGN.md "Side-API"): routes, models, tokens, OpenAPI."""
