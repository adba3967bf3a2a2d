// Generates the Prisma client after `npm install`. The Prisma CLI is a dev dependency: in a
// production-only install (the container's runtime stage) it is absent and the client ships prebuilt.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

if (!existsSync('node_modules/prisma')) process.exit(0);
const result = spawnSync('npm', ['run', '--silent', 'generate'], { stdio: 'inherit' });
process.exit(result.status ?? 1);
