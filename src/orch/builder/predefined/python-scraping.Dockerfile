# requests, beautifulsoup4, lxml, httpx
FROM e2bdev/code-interpreter:latest
RUN uv pip install --system requests beautifulsoup4 lxml httpx
