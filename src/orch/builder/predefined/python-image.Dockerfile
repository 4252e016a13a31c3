# pillow, opencv-python-headless
FROM e2bdev/code-interpreter:latest
RUN uv pip install --system pillow opencv-python-headless
