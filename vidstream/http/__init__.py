"""The gateway: aiohttp REST API for uploads and jobs."""
