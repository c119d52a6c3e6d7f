// Bundles the browser code: dist/sdk.js (visitor), dist/viewer.js (watch page),
// dist/console.js (agent console). Minified IIFEs with external sourcemaps.
// `node build.mjs --dev` skips minification.
import * as esbuild from 'esbuild';

const dev = process.argv.includes('--dev');

await esbuild.build({
  entryPoints: { sdk: 'src/sdk.js', viewer: 'src/viewer.js', console: 'src/console.js' },
  outdir: 'dist',
  bundle: true,
  loader: { '.css': 'text' },
  format: 'iife',
  platform: 'browser',
  target: ['es2020'],
  minify: !dev,
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
});
