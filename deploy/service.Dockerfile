# One image recipe for the three services; SERVICE picks the extra and the app, TF_PACKAGE the TensorFlow build.
#   docker build -f deploy/service.Dockerfile --build-arg SERVICE=matcher -t facegate-matcher .
#   GPU embedder: --build-arg SERVICE=embedder --build-arg TF_PACKAGE='tensorflow[and-cuda]==2.21.0'
FROM python:3.11-slim
ARG SERVICE
ARG TF_PACKAGE=tensorflow-cpu==2.21.0
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 SERVICE=${SERVICE}
# g++: the matcher's hnswlib ships as source only.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 curl g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY services ./services
COPY migrations ./migrations
# The embedder's extra pins tensorflow-cpu; the GPU build swaps in TF_PACKAGE afterwards. HNSWLIB_NO_NATIVE:
# build hnswlib for any x86-64, not -march=native of the build host (the image runs elsewhere).
RUN HNSWLIB_NO_NATIVE=1 pip install ".[${SERVICE}]" \
    && if [ "${SERVICE}" = "embedder" ] && [ "${TF_PACKAGE}" != "tensorflow-cpu==2.21.0" ]; then \
         pip uninstall -y tensorflow-cpu && pip install "${TF_PACKAGE}"; fi
RUN useradd --create-home facegate
USER facegate
CMD ["sh", "-c", "exec uvicorn services.${SERVICE}.app:create_app --factory --host 0.0.0.0 --port ${PORT:-8000}"]
