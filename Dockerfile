# One Dockerfile for the update system's four service images (checker, downloader, installer,
# bus-gateway): docker build --build-arg SERVICE=checker --build-arg PORT=8081 -t aico-update/checker .
# (and, with PACKAGE=tools/release MAIN=src/cli.ts, the development update server's).
# Multi-stage: production dependencies only, Node 24, a non-root user, and the service's TypeScript run
# directly by Node (type stripping): nothing is compiled.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS deps
ARG SERVICE
ARG PACKAGE=services/${SERVICE}
WORKDIR /app
COPY package.json package-lock.json ./
COPY libs/shared/package.json libs/shared/
COPY libs/tuf-client/package.json libs/tuf-client/
COPY libs/image-archive/package.json libs/image-archive/
COPY libs/aico-bus/package.json libs/aico-bus/
COPY tools/release/package.json tools/release/
COPY services/checker/package.json services/checker/
COPY services/downloader/package.json services/downloader/
COPY services/installer/package.json services/installer/
COPY services/bus-gateway/package.json services/bus-gateway/
# No install scripts: zeromq ships its prebuilt library; nothing else a service needs builds anything.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund --workspace ${PACKAGE}

FROM ${NODE_IMAGE}
ARG SERVICE
ARG PACKAGE=services/${SERVICE}
ARG MAIN=src/main.ts
ARG PORT
ENV NODE_ENV=production AICO_HTTP_PORT=${PORT}
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY libs ./libs
COPY tools/release/package.json tools/release/
COPY ${PACKAGE} ./${PACKAGE}
# The state folders, owned by the service's user: a named volume mounted there starts with that owner.
RUN ln -s ${PACKAGE}/${MAIN} main.ts && \
    mkdir -p /var/lib/aico-update/checker /var/lib/aico-update/downloader /var/lib/aico-update/cache \
             /var/lib/aico-update/installer /var/lib/aico-update/backups && \
    chown -R node:node /var/lib/aico-update
USER node
EXPOSE ${PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+process.env.AICO_HTTP_PORT+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "main.ts"]
