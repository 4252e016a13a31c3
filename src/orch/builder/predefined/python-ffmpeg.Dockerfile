# ffmpeg-python, moviepy, imageio-ffmpeg
FROM e2bdev/code-interpreter:latest
RUN uv pip install --system ffmpeg-python moviepy imageio-ffmpeg
