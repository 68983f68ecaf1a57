# Sourced by the scripts/fetch_*.sh scripts: one way to fetch and unpack a Debian package
# without root (no internet beyond the package registry).
# fetch_deb PACKAGE: unpack data/debs/PACKAGE_*.deb (downloaded once) into data/x-PACKAGE.
fetch_deb() {
  local pkg="$1"
  if [ -d "data/x-$pkg/usr" ]; then return 0; fi
  mkdir -p data/debs
  if ! ls "data/debs/${pkg}"_*.deb >/dev/null 2>&1; then
    (cd data/debs && apt-get download "$pkg") || {
      echo "$(basename "$0"): 'apt-get download $pkg' failed; run 'apt-get update'" \
           "or copy the .deb into data/debs/ by hand" >&2
      exit 1
    }
  fi
  dpkg -x "data/debs/${pkg}"_*.deb "data/x-$pkg"
}
