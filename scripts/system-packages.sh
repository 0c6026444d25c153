#!/usr/bin/env bash
# The test suite starts real servers: PostgreSQL (tests/postgres.py, Debian's initdb and pg_ctl) and
# Apache Spark (tests/test_spark.py, which needs a Java 17+ runtime). Install Debian's packages for
# whichever is missing (as root, or through non-interactive sudo); do nothing when both are there.
set -euo pipefail
packages=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then packages+=(postgresql); fi
if ! command -v java >/dev/null; then packages+=(default-jre-headless); fi
if [ "${#packages[@]}" -eq 0 ]; then exit 0; fi
echo "installing ${packages[*]} (Debian packages the tests need)" >&2
as_root=(env DEBIAN_FRONTEND=noninteractive)
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo -n "${as_root[@]}"); fi
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
