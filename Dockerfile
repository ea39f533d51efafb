# One image for every Causeway part: controller, gateway, federation, sidecar, CA tooling
# and the demo app. `docker build -t causeway:dev .` — the tag the topologies use.
# (Without Docker, `causeway topology` maps causeway:* to this checkout's CLI instead.)
# No `# syntax=` line: BuildKit would fetch that frontend from a registry, and the plain
# Dockerfile needs nothing newer. Where no registry answers, scripts/offline-base-images.sh
# provides node:24-slim.

# --- build: type-check and compile the TypeScript to plain ESM JavaScript ----------------
FROM node:24-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: no install hooks needed to compile; the `node` devDependency's binary is not used here.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY api ./api
COPY api-client ./api-client
COPY mesh ./mesh
COPY store ./store
COPY ca ./ca
COPY controller ./controller
COPY federation ./federation
COPY gateway ./gateway
COPY proxy ./proxy
COPY ui ./ui
COPY cli ./cli
COPY topologies ./topologies
COPY scripts/bundles.mjs ./scripts/
RUN printf '%s' '{"extends":"./tsconfig.json","compilerOptions":{"noEmit":false,"outDir":"/build","rootDir":"."},"include":["api","api-client","mesh","store","ca","controller","federation","gateway","proxy","cli","topologies"]}' > tsconfig.build.json \
 && npx tsc -p tsconfig.build.json \
 && find api topologies -type f ! -name '*.ts' -exec cp --parents {} /build/ \; \
 && cp package.json /build/
# The long-running commands (sidecar, gateway, controller, federation) run from one minified
# bundle each, started by dist/<command>.sh (the sidecar's with its memory settings;
# scripts/bundles.mjs): they sit one folder below the root, as in a checkout, so they find
# ../api; etcd3's .proto files travel in dist/etcd3-proto.
RUN node scripts/bundles.mjs \
 && mkdir -p /build/dist \
 && cp -r dist/*.mjs dist/*.mjs.map dist/*.sh dist/etcd3-proto /build/dist/

# --- production dependencies only --------------------------------------------------------
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# --- runtime -----------------------------------------------------------------------------
FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /build ./
# The long-running commands run their bundles, everything else the compiled CLI.
RUN printf '#!/bin/sh\ncase "$1" in sidecar|gateway|controller|federation) exec "/app/dist/$1.sh" "$@";; esac\nexec node /app/cli/main.js "$@"\n' > /usr/local/bin/causeway \
 && chmod 0755 /usr/local/bin/causeway \
 && mkdir -p /certs /data /config /state /bundle /shared \
 && chown -R node:node /certs /data /config /state /bundle /shared
# Every path a topology mounts a named volume at exists here, owned by node: Docker
# fills a new named volume from the image's folder, ownership included, so the unprivileged
# user can write it (a folder missing from the image would come up root-owned).
# test/docker/ checks this for every volume of topologies/*/compose.yaml.
# The node image's unprivileged user (uid 1000). Mesh ports are all above 1024.
USER node
EXPOSE 15443 15012 15006 15001 15053 15021 15090
ENTRYPOINT ["causeway"]
CMD ["--help"]
