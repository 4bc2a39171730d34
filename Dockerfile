# One Dockerfile for the update system's four service images (checker, downloader, installer,
# bus-gateway): docker build --build-arg SERVICE=checker --build-arg PORT=8081 -t aico-update/checker .
# (and, with PACKAGE=tools/release MAIN=src/cli.ts, the development update server's).
# Multi-stage: production dependencies only, Node 24, a non-root user. The image runs JavaScript compiled
# from the TypeScript (tsconfig.build.json): Node's type stripping would load its TypeScript parser into
# every service, 17 MiB of resident memory each (docs/decisions.md, "Compiled images").
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS deps
ARG SERVICE
ARG PACKAGE=services/${SERVICE}
WORKDIR /app
COPY package.json package-lock.json ./
COPY libs/shared/package.json libs/shared/
COPY libs/tuf-client/package.json libs/tuf-client/
COPY libs/image-archive/package.json libs/image-archive/
COPY libs/chunked-layer/package.json libs/chunked-layer/
COPY libs/aico-bus/package.json libs/aico-bus/
COPY tools/release/package.json tools/release/
COPY services/checker/package.json services/checker/
COPY services/downloader/package.json services/downloader/
COPY services/installer/package.json services/installer/
COPY services/bus-gateway/package.json services/bus-gateway/
# No install scripts: zeromq ships its prebuilt library; nothing else a service needs builds anything.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund --workspace ${PACKAGE}

# The JavaScript of every package, the same for all images (so this stage is built once): the TypeScript
# compiler at the lockfile's version, then scripts/compile.sh.
FROM ${NODE_IMAGE} AS compile
WORKDIR /app
COPY package-lock.json ./
RUN mkdir -p /opt/tsc && cd /opt/tsc && \
    npm install --no-audit --no-fund --no-save \
      "typescript@$(node -p "require('/app/package-lock.json').packages['node_modules/typescript'].version")"
COPY tsconfig.base.json tsconfig.build.json ./
COPY scripts/compile.sh scripts/
COPY libs ./libs
COPY services ./services
COPY tools ./tools
RUN sh scripts/compile.sh /tmp/aico-build /opt/tsc/node_modules/typescript/bin/tsc

# The operator's page (the gateway serves it at /): Preact bundled by esbuild, both at the lockfile's
# versions. The same for all images (a few dozen KiB); only the gateway serves it.
FROM ${NODE_IMAGE} AS page
WORKDIR /app
COPY package-lock.json ./
RUN mkdir -p /opt/page && cd /opt/page && \
    lock=/app/package-lock.json && \
    npm install --no-audit --no-fund --no-save \
      "esbuild@$(node -p "require('$lock').packages['node_modules/esbuild'].version")" \
      "preact@$(node -p "require('$lock').packages['node_modules/preact'].version")"
COPY services/bus-gateway/page ./services/bus-gateway/page
RUN ln -s /opt/page/node_modules node_modules && node services/bus-gateway/page/build.ts

FROM ${NODE_IMAGE}
ARG SERVICE
ARG PACKAGE=services/${SERVICE}
ARG MAIN=src/main.js
ARG PORT
ENV NODE_ENV=production AICO_HTTP_PORT=${PORT}
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY --from=compile /tmp/aico-build/libs ./libs
COPY --from=compile /tmp/aico-build/tools/release/package.json tools/release/
COPY --from=compile /tmp/aico-build/${PACKAGE} ./${PACKAGE}
COPY --from=page /app/services/bus-gateway/page/dist ./services/bus-gateway/page/dist
# The state folders, owned by the service's user: a named volume mounted there starts with that owner.
RUN ln -s ${PACKAGE}/${MAIN} main.js && \
    mkdir -p /var/lib/aico-update/checker /var/lib/aico-update/downloader /var/lib/aico-update/cache \
             /var/lib/aico-update/installer /var/lib/aico-update/backups /var/lib/aico-update/gateway && \
    chown -R node:node /var/lib/aico-update
USER node
EXPOSE ${PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+process.env.AICO_HTTP_PORT+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "main.js"]
