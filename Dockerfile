# syntax=docker/dockerfile:1
# Tandem for NVIDIA GPUs: the CUDA addon is compiled in a CUDA 13 devel image and copied, with
# the Node.js app, into the smaller CUDA 13 runtime image (it has libcublasLt, which the addon
# links). Build: docker build -t tandem .   Run: see docker-compose.yml and the README.
ARG CUDA_VERSION=13.0.1
ARG UBUNTU_VERSION=24.04

# Node.js 20 from the official image: its binary is built for glibc 2.28, so it runs on Ubuntu 24.04.
FROM node:20-bookworm-slim AS node

# ---- build: npm dependencies and the CUDA kernels ----
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && node --version && npm --version
WORKDIR /app
COPY package.json package-lock.json ./
# Runtime dependencies only (tsx runs the TypeScript; node-api-headers serves the addon build).
# --ignore-scripts: package.json's postinstall would build the addon for sm_90 alone, before
# kernels/ is here; it is built below for the release archs instead.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY kernels ./kernels
# One cubin each for Hopper (H100/H200), Ada (RTX 4090, L40S) and Ampere (A100), plus PTX of sm_90.
ARG TANDEM_CUDA_ARCHS="90 89 80"
RUN TANDEM_CUDA_ARCHS="${TANDEM_CUDA_ARCHS}" bash kernels/build.sh \
 && test -f build/tandem_cuda.node

# ---- runtime ----
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
COPY --from=node /usr/local/bin/node /usr/local/bin/node
RUN groupadd --system --gid 10001 tandem \
 && useradd --system --uid 10001 --gid tandem --home-dir /data --shell /usr/sbin/nologin tandem \
 && mkdir -p /models /data \
 && chown tandem:tandem /data
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/build/tandem_cuda.node ./build/tandem_cuda.node
COPY package.json ./
COPY bin ./bin
COPY src ./src
# The embedded random model: the default, so the image starts without a mounted model.
COPY models ./models

# Mount real models at /models (TANDEM_MODEL=/models/NAME). /data holds job records and
# checkpoints: the working directory, so a job's default output_dir runs/<name> lands there.
VOLUME ["/models", "/data"]
ENV NODE_ENV=production \
    TANDEM_HOST=0.0.0.0 \
    TANDEM_PORT=8000 \
    TANDEM_MODEL=/app/models/tandem-small \
    TANDEM_JOBS_DIR=/data/jobs
USER tandem
WORKDIR /data
EXPOSE 8000
# /health is 503 while the model loads and 200 once it serves; a large model takes minutes to load.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.TANDEM_PORT || 8000) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/bin/tandem.js"]
CMD ["serve", "--host", "0.0.0.0"]
