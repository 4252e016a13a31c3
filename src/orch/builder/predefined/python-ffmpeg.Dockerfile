# Video and audio: ffmpeg-python, moviepy, imageio-ffmpeg (ships an ffmpeg binary).
FROM e2bdev/code-interpreter:latest
RUN uv pip install --system ffmpeg-python moviepy imageio-ffmpeg
