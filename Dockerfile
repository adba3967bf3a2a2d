# syntax=docker/dockerfile:1
# Production image: docker build -t receiver . && docker run -e DATABASE_URL=postgres://… -p 3000:3000 receiver

FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: none is needed to compile (`npm run build` generates the Prisma client itself),
# and the lockfile layer then stays cached until the dependencies change.
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts
COPY . .
RUN npm run build

FROM node:24-bookworm-slim
ENV NODE_ENV=production DATA_DIR=/app/data
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=optional keeps out embedded-postgres' native PostgreSQL binaries (development only; production
# refuses to start without DATABASE_URL) and pg-cloudflare (Cloudflare Workers only). --ignore-scripts:
# no production dependency has an install script, and postinstall would only skip the absent Prisma CLI.
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --omit=optional --ignore-scripts
COPY --from=build /app/dist ./dist
# The migrator reads these at start, from dist/db/migrate.js's ../../prisma/migrations.
COPY prisma/migrations ./prisma/migrations
# Owned by node so a volume mounted here starts out writable (PDFs land in DATA_DIR/pdf). /app/spool is
# where SPOOL_DIR should point, on a volume of its own (docker run -v receiver-spool:/app/spool): a new
# named volume takes this owner and mode 0700 (it holds patient data). SPOOL_DIR is not set here: on the
# container's own layer the spool would be lost with the container, so the operator turns it on.
RUN mkdir -p data spool && chown node:node data spool && chmod 0700 spool
USER node
EXPOSE 3000
STOPSIGNAL SIGTERM
# Slim images have no curl; /healthz checks the process only, so a database outage does not restart it.
# dist/cli/healthcheck.js reads the configuration as the service does and asks /healthz where it listens (HTTPS with TLS_CERT_FILE).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "dist/cli/healthcheck.js"]
# node as PID 1 receives SIGTERM itself (no npm wrapper), so main.ts drains and logs "stopped".
# The flags are npm start's (a test keeps them equal); the small young generation frees download
# buffers sooner, which keeps peak memory down during a burst of PDFs (README, Performance).
CMD ["node", "--enable-source-maps", "--max-semi-space-size=2", "--no-wasm-tier-up", "--no-wasm-dynamic-tiering", "dist/main.js"]
