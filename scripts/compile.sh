#!/bin/sh
# Compiles the workspace's runtime code to JavaScript in OUT, as the images run it: every package's src
# (tsconfig.build.json: types erased, .ts imports rewritten to .js), the packages' own .js files (the
# generated protobuf code), and each package.json with its exports pointing at .js.
# Used by the Dockerfile's compile stage (busybox sh there) and by the benchmarks.
#   sh scripts/compile.sh OUT [TSC]    (TSC: the compiler's bin/tsc, default the workspace's)
set -eu
out=$1
tsc=${2:-node_modules/typescript/bin/tsc}
node "$tsc" -p tsconfig.build.json --outDir "$out"
for file in $(find libs services tools -path '*/src/*' -name '*.js' -not -path '*/node_modules/*'); do
  mkdir -p "$out/${file%/*}" && cp "$file" "$out/$file"
done
for manifest in libs/*/package.json services/*/package.json tools/*/package.json; do
  sed 's/\.ts"/.js"/g' "$manifest" >"$out/$manifest"
done
