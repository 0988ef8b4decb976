#!/usr/bin/env bash
# make deb: a Debian package of an already built tree, staged with
# `cmake --install` (as make install does) plus the systemd units, the
# config in /etc/parley and the maintainer scripts; built by dpkg-deb, no
# debhelper. Usage: build-deb.sh BUILD_DIR OUT_DIR [VERSION]
set -euo pipefail

build=$1 out=$2 version=${3:-0.1}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d "${TMPDIR:-/tmp}/parley-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
mkdir -p "$stage/DEBIAN" "$out"

DESTDIR=$stage cmake --install "$build" --prefix /usr --strip >/dev/null
# Debian compresses man pages and long documentation; deploy.md stays as it
# is, for the units' Documentation= line.
gzip -9n "$stage"/usr/share/man/man1/*.1 "$stage/usr/share/doc/parley/README.md"
mv "$stage/usr/share/doc/parley/LICENSE" "$stage/usr/share/doc/parley/copyright"

# The config: the example, with the data where the package keeps it.
install -d -m 0755 "$stage/etc/parley"
sed -e 's|^data = \./parley-data$|data = /var/lib/parley|' \
    "$top/parley.conf.example" >"$stage/etc/parley/parleyd.conf"
grep -q '^data = /var/lib/parley$' "$stage/etc/parley/parleyd.conf"
chmod 0640 "$stage/etc/parley/parleyd.conf"

install -D -m 0644 "$here/logrotate" "$stage/etc/logrotate.d/parley"

install -d "$stage/lib/systemd/system"
install -m 0644 "$top/deploy/systemd/parleyd.service" "$top/deploy/systemd/parleyd@.service" \
    "$stage/lib/systemd/system/"

# Shared libraries the programs link: the package names that hold them.
deps=$(
    cd "$stage" && mkdir -p debian && touch debian/control &&
        dpkg-shlibdeps -O --ignore-missing-info -e usr/bin/parleyd -e usr/bin/parley \
            -e usr/bin/parleyctl 2>/dev/null | sed -n 's/^shlibs:Depends=//p'
    rm -rf debian
)
[ -n "$deps" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@SIZE@|$size|" \
    -e "s|@DEPENDS@|$deps|" "$here/control.in" >"$stage/DEBIAN/control"
install -m 0644 "$here/conffiles" "$stage/DEBIAN/conffiles"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$stage/DEBIAN/"

deb="$out/parley_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
