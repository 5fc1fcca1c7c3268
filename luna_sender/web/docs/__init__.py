"""The /docs/* documents: OpenAPI and AsyncAPI built from the router and filter tables, and the
manual rendered from docs/*.md."""
