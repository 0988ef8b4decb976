"""Packaging and deployment as an operator meets them (docs/deploy.md):
make install's layout, the Debian package (built with deploy/debian/build-deb.sh
from this build tree, as make deb does, then installed with dpkg into a
scratch root: the real system is not touched), its systemd units, the man
pages, the Dockerfile (linted: no image can be built without a registry) and
the Kubernetes manifests (checked offline: no cluster here)."""
import configparser
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

import yaml

from harness import PARLEYD, Peer, S_REGISTER_OK, Server

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD = os.path.dirname(os.path.abspath(PARLEYD))
K8S = os.path.join(ROOT, "deploy", "k8s")
BINARIES = ("parleyd", "parley", "parleyctl")
# Options of branches merged alongside this test (test_config.UPCOMING).
from test_config import UPCOMING


def run(*args, check=True, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (" ".join(args), r.returncode,
                                                          r.stdout[-3000:], r.stderr[-3000:]))
    return r


def parleyd_options():
    out = run(PARLEYD, "--help").stdout
    return set(re.findall(r"^  --([a-z0-9-]+)", out, re.M)) | UPCOMING


def read(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return f.read()


def unit(path):
    """A systemd unit file as {section: {key: value}} (the last of repeated keys)."""
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read(path)
    return {s: dict(cp[s]) for s in cp.sections()}


@unittest.skipUnless(shutil.which("dpkg-deb"), "needs dpkg-deb")
class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="parley-pkg-")
        out = run("bash", os.path.join(ROOT, "deploy/debian/build-deb.sh"), BUILD,
                  os.path.join(cls.tmp, "dist"), "0.1").stdout
        cls.deb = out.strip().split("\n")[-1]
        assert os.path.isfile(cls.deb), out

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def scratch_root(self):
        """An empty root with a dpkg database of its own."""
        r = tempfile.mkdtemp(prefix="root-", dir=self.tmp)
        os.makedirs(os.path.join(r, "var/lib/dpkg/info"))
        os.makedirs(os.path.join(r, "var/lib/dpkg/updates"))
        open(os.path.join(r, "var/lib/dpkg/status"), "w").close()
        return r

    def dpkg(self, root, *args):
        # Maintainer scripts run outside the root with DPKG_ROOT set (they
        # then neither add a user nor touch systemd on this machine); the
        # root has no libraries, hence --force-depends.
        return run("dpkg", "--root=" + root, "--force-script-chrootless", "--force-depends",
                   "--force-not-root", "--log=/dev/null", *args)

    def test_control(self):
        f = {k: run("dpkg-deb", "-f", self.deb, k).stdout.strip()
             for k in ("Package", "Version", "Architecture", "Depends", "Description")}
        self.assertEqual(f["Package"], "parley")
        self.assertEqual(f["Version"], "0.1")
        self.assertEqual(f["Architecture"], run("dpkg", "--print-architecture").stdout.strip())
        deps = {d.split()[0] for d in f["Depends"].split(", ")}
        for lib in ("adduser", "libevent-2.1-7", "libsodium23", "libssl3", "libsqlite3-0",
                    "libmariadb3", "libhiredis0.14", "libzookeeper-mt2"):
            self.assertIn(lib, deps)
        ctl = os.path.join(self.tmp, "control")
        run("dpkg-deb", "-e", self.deb, ctl)
        with open(os.path.join(ctl, "conffiles")) as fh:
            self.assertEqual(fh.read().split(), ["/etc/parley/parleyd.conf",
                                                 "/etc/logrotate.d/parley"])
        for script in ("postinst", "prerm", "postrm"):
            p = os.path.join(ctl, script)
            self.assertTrue(os.stat(p).st_mode & stat.S_IXUSR, script)
            run("sh", "-n", p)
        with open(os.path.join(ctl, "postinst")) as fh:
            post = fh.read()
        self.assertIn("adduser --system", post)
        self.assertIn("/var/lib/parley", post)

    def test_contents(self):
        listing = run("dpkg-deb", "-c", self.deb).stdout
        files = {}
        for line in listing.splitlines():
            mode, owner, _size, _d, _t, path = line.split(None, 5)
            files[path.split(" -> ")[0].lstrip(".")] = (mode, owner)
        for b in BINARIES:
            self.assertEqual(files.get("/usr/bin/" + b), ("-rwxr-xr-x", "root/root"), b)
            self.assertIn("/usr/share/man/man1/%s.1.gz" % b, files)
        self.assertEqual(files.get("/etc/parley/parleyd.conf"), ("-rw-r-----", "root/root"))
        for p in ("/lib/systemd/system/parleyd.service", "/lib/systemd/system/parleyd@.service",
                  "/usr/share/doc/parley/parley.conf.example", "/usr/share/doc/parley/copyright",
                  "/usr/share/doc/parley/deploy.md"):
            self.assertIn(p, files)
        self.assertTrue(all(o == "root/root" for _, o in files.values()))

    def test_install_into_scratch_root(self):
        root = self.scratch_root()
        self.dpkg(root, "-i", self.deb)
        st = run("dpkg", "--root=" + root, "-s", "parley").stdout
        self.assertIn("Status: install ok installed", st)
        for b in BINARIES:
            self.assertTrue(os.access(os.path.join(root, "usr/bin", b), os.X_OK), b)
        # postinst made the data and log directories, closed to others.
        for d in ("var/lib/parley", "var/log/parley"):
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode), 0o750, d)
        conf = os.path.join(root, "etc/parley/parleyd.conf")
        with open(conf) as f:
            text = f.read()
        self.assertRegex(text, r"(?m)^data = /var/lib/parley$")
        # The installed parleyd runs with the installed config (port and data
        # moved by flags, which win, so as to run here) and serves.
        s = Server(binary=os.path.join(root, "usr/bin/parleyd"), extra=["--config", conf])
        self.addCleanup(s.cleanup)
        s.start()
        p = Peer(s.port)
        self.addCleanup(p.close)
        self.assertIn(S_REGISTER_OK, p.register("pkguser"))
        s.cleanup()
        # Remove keeps the config (a conffile) and the data; purge drops the
        # config; the data stays until the operator removes it.
        self.dpkg(root, "-r", "parley")
        self.assertFalse(os.path.exists(os.path.join(root, "usr/bin/parleyd")))
        self.assertTrue(os.path.exists(conf))
        self.dpkg(root, "-P", "parley")
        self.assertFalse(os.path.exists(conf))
        self.assertTrue(os.path.isdir(os.path.join(root, "var/lib/parley")))

    def test_units(self):
        root = self.scratch_root()
        run("dpkg-deb", "-x", self.deb, root)
        sysd = os.path.join(root, "lib/systemd/system")
        one = unit(os.path.join(sysd, "parleyd.service"))
        tpl = unit(os.path.join(sysd, "parleyd@.service"))
        for u, conf, data in ((one, "/etc/parley/parleyd.conf", "/var/lib/parley"),
                              (tpl, "/etc/parley/%i.conf", "/var/lib/parley/%i")):
            svc = u["Service"]
            exe, *args = svc["ExecStart"].split()
            self.assertEqual(exe, "/usr/bin/parleyd")
            self.assertTrue(os.access(root + exe, os.X_OK))
            self.assertEqual(args, ["--config", conf])
            self.assertEqual(svc["User"], "parley")
            self.assertEqual(svc["WorkingDirectory"], data)
            self.assertEqual("/var/lib/" + svc["StateDirectory"], data)
            self.assertEqual(svc["ExecReload"], "/bin/kill -HUP $MAINPID")
            self.assertEqual(u["Install"]["WantedBy"], "multi-user.target")
        self.assertTrue(os.path.isfile(os.path.join(root, "etc/parley/parleyd.conf")))
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze not installed: units checked by parsing only")
        # systemd's own check, with the binary path pointed into the root.
        vdir = os.path.join(self.tmp, "verify")
        os.makedirs(vdir, exist_ok=True)
        for src, dst in (("parleyd.service", "parleyd.service"),
                         ("parleyd@.service", "parleyd@gateway.service")):
            with open(os.path.join(sysd, src)) as f:
                text = f.read().replace("/usr/bin/parleyd", root + "/usr/bin/parleyd")
            with open(os.path.join(vdir, dst), "w") as f:
                f.write(text)
        r = run("systemd-analyze", "verify", "--man=no",
                os.path.join(vdir, "parleyd.service"), os.path.join(vdir, "parleyd@gateway.service"),
                check=False)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))

    def test_docs_say_where(self):
        doc = read("docs", "deploy.md")
        for p in ("/usr/bin/parleyd", "/usr/bin/parley", "/usr/bin/parleyctl",
                  "/etc/parley/parleyd.conf", "/etc/parley/ROLE.conf",
                  "/lib/systemd/system/parleyd.service", "parleyd@.service", "/var/lib/parley",
                  "/usr/share/doc/parley/parley.conf.example", "make deb", "make install",
                  "PREFIX", "DESTDIR"):
            self.assertIn(p, doc)


class InstallTest(unittest.TestCase):
    def test_make_install_layout(self):
        """make install is cmake --install with PREFIX and DESTDIR."""
        with tempfile.TemporaryDirectory() as dest:
            env = dict(os.environ, DESTDIR=dest)
            run("cmake", "--install", BUILD, "--prefix", "/opt/parley", env=env)
            base = os.path.join(dest, "opt/parley")
            for b in BINARIES:
                self.assertTrue(os.access(os.path.join(base, "bin", b), os.X_OK), b)
                self.assertTrue(os.path.isfile(os.path.join(base, "share/man/man1", b + ".1")))
            self.assertTrue(os.path.isfile(os.path.join(base, "share/doc/parley",
                                                        "parley.conf.example")))
            self.assertTrue(os.path.isfile(os.path.join(base, "share/doc/parley", "LICENSE")))
        mk = read("Makefile")
        self.assertRegex(mk, r"(?m)^install: build\n\t.*DESTDIR=\$\(DESTDIR\) cmake --install "
                             r"\$\(BUILD\) --prefix \$\(PREFIX\)")

    @unittest.skipUnless(shutil.which("man"), "needs man")
    def test_man_pages_render_cleanly(self):
        for b in BINARIES:
            page = os.path.join(ROOT, "docs/man", b + ".1")
            r = run("man", "--warnings", "-l", page, env=dict(os.environ, MANWIDTH="80",
                                                              LC_ALL="C.UTF-8"))
            self.assertEqual(r.stderr, "", b)
            self.assertIn("NAME", r.stdout)
        # parleyd's page lists every option of --help.
        text = read("docs/man/parleyd.1").replace("\\-", "-")
        for o in parleyd_options():
            self.assertIn("--" + o, text)


class DockerfileTest(unittest.TestCase):
    """No registry here to pull debian:12 from: the Dockerfile is checked
    for what it must say, not built."""

    def setUp(self):
        text = read("Dockerfile")
        self.lines = []
        for line in re.sub(r"\\\n", " ", text).splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                self.lines.append(line.split(None, 1))

    def instr(self, name):
        return [rest for i, rest in self.lines if i.upper() == name]

    def test_structure(self):
        known = {"FROM", "RUN", "COPY", "WORKDIR", "USER", "VOLUME", "EXPOSE", "STOPSIGNAL",
                 "ENTRYPOINT", "CMD", "ENV", "ARG", "LABEL"}
        self.assertEqual([i for i, _ in self.lines if i.upper() not in known], [])
        froms = self.instr("FROM")
        self.assertTrue(all(f.startswith("debian:12") for f in froms), froms)
        self.assertEqual(self.lines[-1][0], "CMD")
        user = self.instr("USER")
        self.assertTrue(user and user[-1] not in ("root", "0"))
        self.assertEqual(self.instr("EXPOSE"), ["7070"])
        self.assertEqual(self.instr("ENTRYPOINT"), ['["/usr/bin/parleyd"]'])
        import json
        cmd = json.loads(self.instr("CMD")[0])
        self.assertTrue({a[2:] for a in cmd if a.startswith("--")} <= parleyd_options())
        # parleyd takes the default arguments (they parse: --help answers
        # after reading them).
        run(PARLEYD, *cmd, "--help")

    def test_runtime_libraries_match_the_package(self):
        """The final stage installs what dpkg-shlibdeps says the programs need."""
        runs = self.instr("RUN")
        final = runs[-1]
        pkgs = set(re.findall(r"\blib[a-z0-9.+-]+\d[a-z0-9.+-]*", final))
        build = os.path.join(tempfile.mkdtemp(prefix="parley-shlib-"))
        self.addCleanup(shutil.rmtree, build, True)
        os.makedirs(os.path.join(build, "debian"))
        open(os.path.join(build, "debian/control"), "w").close()
        out = run("dpkg-shlibdeps", "-O", "--ignore-missing-info",
                  *["-e" + os.path.join(BUILD, b) for b in BINARIES], cwd=build).stdout
        deps = {d.split()[0] for d in out.split("=", 1)[1].split(", ")}
        deps -= {"libc6", "libasan8", "libubsan1", "libgcc-s1", "libstdc++6"}
        self.assertEqual(sorted(deps - pkgs), [], "needed but not installed by the Dockerfile")
        self.assertEqual(sorted(pkgs - deps), [], "installed but not needed")

    def test_copies_exist(self):
        for rest in self.instr("COPY"):
            if rest.startswith("--from"):
                continue
            self.assertTrue(os.path.exists(os.path.join(ROOT, rest.split()[0])), rest)


class KubernetesTest(unittest.TestCase):
    """The manifests in deploy/k8s, checked offline: each object well-formed,
    references resolved (labels, ports, secrets, probes), parleyd's arguments
    known to parleyd; and rendered by `kubectl kustomize` where kubectl is."""

    @classmethod
    def setUpClass(cls):
        cls.objs = []
        cls.secrets = {}
        for name in sorted(os.listdir(K8S)):
            if not name.endswith(".yaml") or name == "kustomization.yaml":
                continue
            with open(os.path.join(K8S, name)) as f:
                for d in yaml.safe_load_all(f):
                    if not d:
                        continue
                    if name == "secrets.example.yaml":
                        cls.secrets[d["metadata"]["name"]] = set(d.get("stringData", {}))
                    else:
                        cls.objs.append((name, d))
        with open(os.path.join(K8S, "kustomization.yaml")) as f:
            cls.kust = yaml.safe_load(f)

    def find(self, kind, name=None):
        return [d for _, d in self.objs if d["kind"] == kind
                and (name is None or d["metadata"]["name"] == name)]

    def test_objects_are_well_formed(self):
        api = {"Namespace": "v1", "Service": "v1", "Secret": "v1", "Deployment": "apps/v1",
               "StatefulSet": "apps/v1"}
        for name, d in self.objs:
            self.assertEqual(d.get("apiVersion"), api.get(d.get("kind")), name)
            self.assertRegex(d["metadata"]["name"], r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
            if d["kind"] in ("Deployment", "StatefulSet"):
                spec = d["spec"]
                sel = spec["selector"]["matchLabels"]
                labels = spec["template"]["metadata"]["labels"]
                self.assertLessEqual(sel.items(), labels.items(), d["metadata"]["name"])
                for c in spec["template"]["spec"]["containers"] + \
                        spec["template"]["spec"].get("initContainers", []):
                    self.assertTrue(c.get("name") and c.get("image"))
        files = set(self.kust["resources"])
        on_disk = {n for n in os.listdir(K8S) if n.endswith(".yaml")} - {
            "kustomization.yaml", "secrets.example.yaml"}
        self.assertEqual(files, on_disk)

    def test_roles(self):
        """Gateways and each service role as Deployments; ZooKeeper, Redis and
        MariaDB as StatefulSets, each behind its Service."""
        for role in ("gateway", "user", "social", "message"):
            (dep,) = self.find("Deployment", "parley-" + role)
            c = dep["spec"]["template"]["spec"]["containers"][0]
            args = c["args"]
            self.assertEqual(args[args.index("--role") + 1], role)
            self.assertEqual(c["image"], "parley")
        for st in ("zookeeper", "redis", "mariadb"):
            (s,) = self.find("StatefulSet", st)
            self.assertTrue(self.find("Service", s["spec"]["serviceName"]), st)
            self.assertTrue(s["spec"].get("volumeClaimTemplates"), st)

    def test_gateway_service_and_readiness(self):
        (dep,) = self.find("Deployment", "parley-gateway")
        pod = dep["spec"]["template"]
        c = pod["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        args = c["args"]
        self.assertEqual(str(ports["admin"]), args[args.index("--admin-port") + 1])
        self.assertEqual(args[args.index("--admin-bind") + 1], "0.0.0.0")
        self.assertEqual(str(ports["client"]), args[args.index("--port") + 1])
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "admin"})
        self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "admin"})
        svcs = [s for s in self.find("Service")
                if s["spec"].get("selector", {}).items() <= pod["metadata"]["labels"].items()]
        self.assertEqual(len(svcs), 1)
        (p,) = svcs[0]["spec"]["ports"]
        self.assertIn(p["targetPort"], ports)

    def test_parleyd_arguments_and_secrets(self):
        known = parleyd_options()
        used = set()
        for name, d in self.objs:
            if d["kind"] not in ("Deployment", "StatefulSet"):
                continue
            pod = d["spec"]["template"]["spec"]
            vols = {v["name"]: v for v in pod.get("volumes", [])}
            claims = {t["metadata"]["name"] for t in d["spec"].get("volumeClaimTemplates", [])}
            for c in pod["containers"] + pod.get("initContainers", []):
                if c["image"] == "parley" and "args" in c:
                    flags = {a[2:] for a in c["args"] if a.startswith("--")}
                    self.assertEqual(flags - known, set(), "%s: unknown to parleyd" % name)
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        self.assertIn(ref["key"], self.secrets.get(ref["name"], ()), name)
                        used.add(ref["name"])
                for m in c.get("volumeMounts", []):
                    self.assertIn(m["name"], vols.keys() | claims, name)
            for v in vols.values():
                if "secret" in v:
                    self.assertIn(v["secret"]["secretName"], self.secrets, name)
                    used.add(v["secret"]["secretName"])
        # The init container copies these keys: each must be in its secret.
        self.assertLessEqual({"cluster.key", "zk-auth", "redis-password"},
                             self.secrets["parley-cluster"])
        self.assertLessEqual({"ca.pem", "node.pem", "node.key"}, self.secrets["parley-service-tls"])
        self.assertEqual(used, set(self.secrets))

    @unittest.skipUnless(shutil.which("kubectl"), "kubectl not installed")
    def test_kustomize_renders(self):
        out = run("kubectl", "kustomize", K8S).stdout
        kinds = re.findall(r"(?m)^kind: (\w+)", out)
        self.assertEqual(sorted(set(kinds)), ["Deployment", "Namespace", "Service", "StatefulSet"])
        self.assertEqual(set(re.findall(r"(?m)^  namespace: (\S+)", out)), {"parley"})


if __name__ == "__main__":
    unittest.main()
