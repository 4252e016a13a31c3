# numpy, pandas, scikit-learn, matplotlib, seaborn
FROM e2bdev/code-interpreter:latest
RUN uv pip install --system numpy pandas scikit-learn matplotlib seaborn
