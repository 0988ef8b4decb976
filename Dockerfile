# Parley in a container: parleyd as one process (every service, SQLite in the
# volume /var/lib/parley), built from this source tree on Debian 12.
#   docker build -t parley:0.1 .
#   docker run -p 7070:7070 -v parley-data:/var/lib/parley parley:0.1
# The same image runs cluster nodes: give parleyd other arguments (deploy/k8s,
# docs/deploy.md). It listens on all addresses with TLS (a self-signed
# certificate made in the volume; the log and the ready line give its
# fingerprint for `parley --tls --fingerprint`).

FROM debian:12-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config python3 \
      libevent-dev libprotobuf-c-dev protobuf-c-compiler libsqlite3-dev libsodium-dev \
      libssl-dev libedit-dev libhiredis-dev libmariadb-dev libzookeeper-mt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
 && cmake --build /build -j"$(nproc)" --target parleyd parley parleyctl \
 && DESTDIR=/stage cmake --install /build --prefix /usr --strip

FROM debian:12-slim
# The shared libraries parleyd, parley and parleyctl link (what make deb's
# dpkg-shlibdeps finds; tests/integration/test_package.py checks the two agree).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libevent-2.1-7 libevent-pthreads-2.1-7 libprotobuf-c1 \
      libsqlite3-0 libsodium23 libssl3 libedit2 libhiredis0.14 libmariadb3 \
      libzookeeper-mt2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 parley \
 && useradd --system --uid 10001 --gid parley --home-dir /var/lib/parley --shell /usr/sbin/nologin parley \
 && install -d -o parley -g parley -m 0750 /var/lib/parley
COPY --from=build /stage/usr/ /usr/
USER parley
WORKDIR /var/lib/parley
VOLUME ["/var/lib/parley"]
EXPOSE 7070
# SIGTERM (docker stop) stops parleyd cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/parleyd"]
CMD ["--bind", "0.0.0.0", "--port", "7070", "--data", "/var/lib/parley", "--tls", "auto"]
