#!/usr/bin/env bash
# Fetches the official Zerobus SDK's native core (the npm package
# @databricks/zerobus-ingest-sdk-linux-x64-gnu, a Node addon) into
# .cache/zerobus-sdk/package, pinned to one version and checked against its
# published sha512, for tests/devserver/sdk_test.cc: a client we did not
# write keeps the dev server honest. Needs curl and node (setup-deps.sh);
# npm itself is not needed. Without the network it says so and leaves the
# test to skip (with that reason); anything else that goes wrong fails.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.3.0
INTEGRITY="sha512-N9OXlgNaCtnA4tJpmLbGzI7z09MN+hA6WOuqOOW6UxntX95PSQVyREtDl1QETJjel5wZOh3LNLzn7Wh9C2sxDg=="
URL="https://registry.npmjs.org/@databricks/zerobus-ingest-sdk-linux-x64-gnu/-/zerobus-ingest-sdk-linux-x64-gnu-$VERSION.tgz"
DEST=.cache/zerobus-sdk
if [ "$(cat "$DEST/version" 2>/dev/null)" = "$VERSION" ] && [ -f "$DEST/package/package.json" ]; then
  exit 0
fi
mkdir -p "$DEST"
tgz="$DEST/sdk-$VERSION.tgz"
if ! curl -fsSL --retry 3 --max-time 120 -o "$tgz" "$URL"; then
  echo "setup-sdk: cannot download $URL; the SDK interoperability test will be skipped" >&2
  rm -f "$tgz"
  exit 0
fi
actual="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$actual" != "$INTEGRITY" ]; then
  echo "setup-sdk: $URL does not match its pinned sha512 (got $actual)" >&2
  rm -f "$tgz"
  exit 1
fi
rm -rf "$DEST/package"
tar -xzf "$tgz" -C "$DEST"
rm -f "$tgz"
echo "$VERSION" >"$DEST/version"
echo "setup-sdk: the Zerobus SDK's native core $VERSION is in $DEST/package"
