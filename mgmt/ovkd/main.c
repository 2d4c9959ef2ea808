/* SPDX-License-Identifier: Apache-2.0 */
/* ovkd - the ovk management daemon: a Redfish API over the VMs it deploys
   from OVF/OVA packages and runs (api/redfish.c, providers/). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "events.h"
#include "listen.h"
#include "procs.h"
#include "redfish.h"

#define MAX_BODY (1u << 20)
/* an event stream with nothing to say sends a comment this often, so a
   reader that went away is noticed */
#define SSE_KEEPALIVE_MS 15000

static const char usage_text[] =
"Usage: ovkd [OPTIONS]\n"
"\n"
"The ovk management daemon. It keeps an inventory of virtual machines,\n"
"deploys OVF packages and OVA archives as VMs (disks imported through the\n"
"engine, manifest and certificate checked), runs them on ovk's own\n"
"hypervisor ovkvm (which serves the disks itself) or on QEMU with every\n"
"disk served by pvblk over vhost-user-blk, and answers a DMTF Redfish API\n"
"in which each VM is a ComputerSystem with SystemType \"Virtual\".\n"
"Redfish clients such as redfishtool and python3-sushy drive it.\n"
"\n"
"Options:\n"
"  --state DIR          inventory, imported disks and runtime sockets\n"
"                       (default /var/lib/ovkd)\n"
"  --socket PATH        the unix socket the API answers on (default\n"
"                       DIR/ovkd.sock, mode 0660; a stale one is replaced,\n"
"                       it is removed at exit). ovkctl talks to it.\n"
"  --listen HOST:PORT   also answer over TCP (IPv4). With --tls-cert and\n"
"                       --tls-key that is HTTPS and any address may be\n"
"                       used; without them it is plain HTTP and only\n"
"                       loopback addresses (127.0.0.0/8) are accepted\n"
"  --tls-cert FILE      the server certificate (PEM) for --listen\n"
"  --tls-key FILE       its private key (PEM, unencrypted)\n"
"  --auth-file FILE     one line USER:PASSWORD for HTTP Basic auth (default:\n"
"                       DIR/credentials, made with a random password on\n"
"                       first start, mode 0600)\n"
"  --pvblk PATH         the pvblk program (default: beside ovkd, else PATH)\n"
"  --qemu PATH          the QEMU program (default qemu-system-x86_64)\n"
"  --accel kvm|tcg      QEMU's accelerator (default kvm when /dev/kvm is\n"
"                       usable and the CPU has svm or vmx, else tcg)\n""  --provider auto|qemu|ovkvm\n"
"                       what starts VMs. ovkvm boots the VM's Linux kernel\n"
"                       (Oem.Ovk.Kernel at deploy; it has no firmware) on\n"
"                       KVM; it needs a usable /dev/kvm on a CPU that shows\n"
"                       svm or vmx (a paravirtual KVM counts as none), and\n"
"                       ovkd refuses to start with --provider ovkvm without\n"
"                       it. It has no ACPI power button: GracefulShutdown\n"
"                       is refused (400) for its VMs, and ForceRestart\n"
"                       boots a new ovkvm. auto (the default) picks ovkvm\n"
"                       when KVM can run it and the ovkvm program is found,\n"
"                       else qemu; under auto a VM without a kernel starts\n"
"                       on QEMU. A VM that runs keeps the provider that\n"
"                       started it (in its record), also across restarts\n"
"  --ovkvm PATH         the ovkvm program (default: beside ovkd)\n"
"  --on-exit keep|shutdown|force-off\n"
"                       what SIGTERM or SIGINT does to running VMs: keep\n"
"                       them running (the default), ask each guest to\n"
"                       power off (ACPI) and force off those still on\n"
"                       after --shutdown-timeout (ovkvm's at once: they\n"
"                       have no power button), or force them off\n"
"  --shutdown-timeout SECONDS\n"
"                       how long --on-exit shutdown waits (default 30)\n"
"  -h, --help           this text\n"
"  -V, --version        the version\n"
"\n"
"Every listener asks for HTTP Basic credentials (the --auth-file user)\n"
"on everything but the service root; without them the answer is 401.\n"
"ovkd stays in the foreground. The unix socket is made last: once it\n"
"answers, so does every listener (ovkd then says on stderr where).\n"
"\n"
"Each VM is a JSON file in DIR/vms/, written crash-safely. By default VMs\n"
"keep running when ovkd stops (SIGTERM or SIGINT); ovkd says as it stops\n"
"whether it leaves them running or stops them, and names each VM it\n"
"stops. A restarted ovkd finds running VMs again by pid and process start\n"
"time, and notices when they have powered off; each is managed by the\n"
"provider that started it.\n"
"\n"
"Long jobs are Redfish Tasks (/redfish/v1/TaskService/Tasks/N, with\n"
"TaskState, PercentComplete and Messages): the OEM actions\n"
"OvkComputerSystem.Backup (every disk of a running VM into\n"
"TargetDirectory/diskN, full or incremental, by ovkdisk) and\n"
"OvkComputerSystem.Checkpoint answer 202 Accepted with the task in\n"
"Location, and so does a deploy sent with \"Prefer: respond-async\".\n"
"Power changes and the ends of tasks are server-sent events at\n"
"/redfish/v1/EventService/SSE. Backups run the ovkdisk program (beside\n"
"ovkd, else from PATH).\n"
"\n"
"Examples:\n"
"  ovkd --state /srv/ovkd &\n"
"  ovkctl --socket /srv/ovkd/ovkd.sock list\n"
"  curl --unix-socket /srv/ovkd/ovkd.sock -u admin:PW \\\n"
"       http://localhost/redfish/v1/Systems\n"
"  certtool --generate-privkey --outfile key.pem\n"
"  certtool --generate-self-signed --load-privkey key.pem --outfile cert.pem\n"
"  ovkd --state /srv/ovkd --listen 0.0.0.0:8443 --tls-cert cert.pem \\\n"
"       --tls-key key.pem &\n"
"  curl --cacert cert.pem -u admin:PW https://HOST:8443/redfish/v1/Systems\n"
"  curl --unix-socket /srv/ovkd/ovkd.sock -u admin:PW -d \\\n"
"       '{\"TargetDirectory\": \"/srv/backup/web\"}' \\\n"
"       http://localhost/redfish/v1/Systems/web/Actions/Oem/OvkComputerSystem.Backup\n"
"  curl -N --unix-socket /srv/ovkd/ovkd.sock -u admin:PW \\\n"
"       http://localhost/redfish/v1/EventService/SSE\n"
"  ovkd --state /srv/ovkd --listen 127.0.0.1:8000 &\n"
"  redfishtool -r 127.0.0.1:8000 -S Never -u admin -p PW Systems -I app "
"reset On\n";

static struct mgmt g_m;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_user[128], g_pass[128];
static volatile sig_atomic_t g_stop;

struct req_body {
	char *buf;
	size_t len;
	bool too_big;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
	va_list ap;

	fputs("ovkd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int send_reply(struct MHD_Connection *c, const struct rf_reply *r)
{
	const char *body = r->body ? r->body : "";
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
	int ret;

	if (r->body)
		MHD_add_response_header(resp, "Content-Type",
					"application/json; charset=utf-8");
	MHD_add_response_header(resp, "OData-Version", "4.0");
	if (r->location[0])
		MHD_add_response_header(resp, "Location", r->location);
	if (r->allow[0])
		MHD_add_response_header(resp, "Allow", r->allow);
	ret = MHD_queue_response(c, r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* The service root and its version document are open to all (the Redfish
   specification asks so); everything else needs the credentials. */
static bool needs_auth(const char *url)
{
	return strcmp(url, "/redfish") && strcmp(url, "/redfish/") &&
	       strcmp(url, "/redfish/v1") && strcmp(url, "/redfish/v1/");
}

static bool authorized(struct MHD_Connection *c)
{
	char *pass = NULL;
	char *user = MHD_basic_auth_get_username_password(c, &pass);
	bool ok = user && pass && !strcmp(user, g_user) &&
		  !strcmp(pass, g_pass);

	if (user)
		MHD_free(user);
	if (pass)
		MHD_free(pass);
	return ok;
}

/* One server-sent event stream: the events after the one that was newest
   when it opened. */
struct sse {
	uint64_t seq;
	char *pending; /* what is left of the record being sent */
	size_t off;
};

/* event streams open: stopping waits for them to end cleanly */
static atomic_uint g_streams;

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct sse *s = cls;
	size_t n;

	if (!s->pending) {
		s->pending = events_next(&s->seq, SSE_KEEPALIVE_MS);
		s->off = 0;
		if (!s->pending) {
			if (g_stop || events_stopped())
				return MHD_CONTENT_READER_END_OF_STREAM;
			s->pending = strdup(": keep-alive\n\n");
			if (!s->pending)
				return MHD_CONTENT_READER_END_WITH_ERROR;
		}
	}
	n = strlen(s->pending + s->off);
	if (n > max)
		n = max;
	memcpy(buf, s->pending + s->off, n);
	s->off += n;
	if (!s->pending[s->off]) {
		free(s->pending);
		s->pending = NULL;
	}
	return (ssize_t)n;
}

static void sse_free(void *cls)
{
	struct sse *s = cls;

	free(s->pending);
	free(s);
	atomic_fetch_sub(&g_streams, 1);
}

/* GET /redfish/v1/EventService/SSE: text/event-stream until the client
   goes or ovkd stops (each connection has its thread: the reader waits
   for the next event there). */
static enum MHD_Result sse_open(struct MHD_Connection *c)
{
	struct sse *s = calloc(1, sizeof(*s));
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (!s)
		return MHD_NO;
	s->seq = events_last();
	/* a first comment at once: the headers go out with it, so the
	   client knows it is connected before any event */
	s->pending = strdup(": ovkd events\n\n");
	atomic_fetch_add(&g_streams, 1);
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
						 sse_read, s, sse_free);
	if (!resp) {
		sse_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "text/event-stream");
	MHD_add_response_header(resp, "Cache-Control", "no-cache");
	MHD_add_response_header(resp, "OData-Version", "4.0");
	ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static bool prefers_async(struct MHD_Connection *c)
{
	const char *p = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						    "Prefer");

	return p && strstr(p, "respond-async");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct req_body *b = *con_cls;
	struct rf_reply r;
	int ret;

	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return MHD_NO;
		*con_cls = b;
		return MHD_YES;
	}
	if (*upload_size) {
		if (b->len + *upload_size > MAX_BODY) {
			b->too_big = true;
		} else {
			char *n = realloc(b->buf, b->len + *upload_size + 1);

			if (!n)
				return MHD_NO;
			memcpy(n + b->len, upload, *upload_size);
			b->buf = n;
			b->len += *upload_size;
			b->buf[b->len] = '\0';
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (needs_auth(url) && !authorized(c)) {
		const char *msg = "{\"error\":{\"code\":\"Base.1.8."
				  "InsufficientPrivilege\",\"message\":"
				  "\"credentials needed (HTTP Basic)\"}}";
		struct MHD_Response *resp = MHD_create_response_from_buffer(
			strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);

		MHD_add_response_header(resp, "Content-Type",
					"application/json");
		ret = MHD_queue_basic_auth_fail_response(c, "ovkd", resp);
		MHD_destroy_response(resp);
		return ret;
	}
	if (!strcmp(method, "GET") &&
	    (!strcmp(url, "/redfish/v1/EventService/SSE") ||
	     !strcmp(url, "/redfish/v1/EventService/SSE/")))
		return sse_open(c);
	memset(&r, 0, sizeof(r));
	if (b->too_big) {
		r.status = 413;
		r.body = strdup("{\"error\":{\"code\":\"Base.1.8.GeneralError\","
				"\"message\":\"request body over 1 MiB\"}}");
	} else if (rf_lock_free(url)) {
		rf_handle(&g_m, method, url, b->buf, b->len, 0, &r);
	} else {
		pthread_mutex_lock(&g_lock);
		rf_handle(&g_m, method, url, b->buf, b->len,
			  prefers_async(c) ? RF_ASYNC : 0, &r);
		pthread_mutex_unlock(&g_lock);
	}
	ret = send_reply(c, &r);
	free(r.body);
	return ret;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
		    enum MHD_RequestTerminationCode toe)
{
	struct req_body *b = *con_cls;

	if (b) {
		free(b->buf);
		free(b);
	}
	*con_cls = NULL;
}

/* Reap the VM processes we started that have ended; never any other
   child (a task waits for its ovkdisk itself). A pid whose start time is
   still the recorded one is ours. */
static void reap_vm_procs(void)
{
	for (unsigned i = 0; i < inv_count(g_m.inv); i++) {
		struct vm *vm = inv_at(g_m.inv, i);

		if (vm_proc_alive(&vm->vmm))
			waitpid(vm->vmm.pid, NULL, WNOHANG);
		for (unsigned d = 0; d < vm->ndisks; d++)
			if (vm_proc_alive(&vm->blk[d]))
				waitpid(vm->blk[d].pid, NULL, WNOHANG);
	}
}

/* Watch the VMs: a VMM that went away (the guest powered off) gets its
   disk servers stopped and its record set Off; every power change is an
   event. */
static void *monitor(void *arg)
{
	while (!g_stop) {
		struct timespec ts = { 0, 200 * 1000 * 1000 };

		nanosleep(&ts, NULL);
		pthread_mutex_lock(&g_lock);
		reap_vm_procs();
		for (unsigned i = 0; i < inv_count(g_m.inv); i++) {
			struct vm *vm = inv_at(g_m.inv, i);

			if (mgmt_provider(&g_m, vm)->poll(&g_m.env, vm)) {
				free(vm->last_event);
				vm->last_event = strdup("powered off: the VMM "
							"exited");
				inv_save(g_m.inv, vm);
				say("%s: powered off (the VMM exited)", vm->id);
			}
		}
		rf_power_events(&g_m);
		pthread_mutex_unlock(&g_lock);
	}
	return NULL;
}

/* Read (or make) DIR/uuid and the credentials. */
static int load_identity(const char *state, const char *auth_file)
{
	char path[4096], line[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/uuid", state);
	f = fopen(path, "re");
	if (!f) {
		FILE *r = fopen("/proc/sys/kernel/random/uuid", "re");

		if (!r || !fgets(line, sizeof(line), r)) {
			if (r)
				fclose(r);
			say("cannot make a UUID: %s", strerror(errno));
			return -1;
		}
		fclose(r);
		f = fopen(path, "we");
		if (!f || fputs(line, f) < 0 || fclose(f) != 0) {
			say("%s: %s", path, strerror(errno));
			return -1;
		}
		f = fopen(path, "re");
	}
	if (!f || !fgets(line, sizeof(line), f)) {
		say("%s: cannot read", path);
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	snprintf(g_m.uuid, sizeof(g_m.uuid), "%.36s", line);

	if (!auth_file) {
		snprintf(path, sizeof(path), "%s/credentials", state);
		auth_file = path;
		if (access(path, F_OK) < 0) {
			unsigned char rnd[12];
			int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
			int out;

			if (fd < 0 || read(fd, rnd, sizeof(rnd)) != sizeof(rnd)) {
				say("/dev/urandom: %s", strerror(errno));
				return -1;
			}
			close(fd);
			out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
				   0600);
			if (out < 0) {
				say("%s: %s", path, strerror(errno));
				return -1;
			}
			dprintf(out, "admin:");
			for (size_t i = 0; i < sizeof(rnd); i++)
				dprintf(out, "%02x", rnd[i]);
			dprintf(out, "\n");
			close(out);
			say("made credentials in %s", path);
		}
	}
	f = fopen(auth_file, "re");
	if (!f || !fgets(line, sizeof(line), f)) {
		say("%s: cannot read credentials: %s", auth_file,
		    strerror(errno));
		if (f)
			fclose(f);
		return -1;
	}
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	char *colon = strchr(line, ':');

	if (!colon || colon == line || !colon[1] ||
	    strlen(line) >= sizeof(g_user)) {
		say("%s: expected one line USER:PASSWORD", auth_file);
		return -1;
	}
	*colon = '\0';
	snprintf(g_user, sizeof(g_user), "%s", line);
	snprintf(g_pass, sizeof(g_pass), "%s", colon + 1);
	return 0;
}

/* An ovk program beside this one: in the build tree (../FOLDER/NAME) or
   installed (NAME in the same folder); else NAME from PATH. */
static const char *sibling(const char *folder, const char *name)
{
	char exe[4096], path[4200];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n > 0) {
		exe[n] = '\0';
		char *dir = dirname(exe);

		snprintf(path, sizeof(path), "%s/../%s/%s", dir, folder, name);
		if (access(path, X_OK) == 0)
			return strdup(path);
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (access(path, X_OK) == 0)
			return strdup(path);
	}
	return name;
}

/* --provider: ovkvm where it can run an unmodified guest (a usable
   /dev/kvm on a CPU with svm or vmx, and the ovkvm program: beside ovkd
   or --ovkvm), else QEMU; an explicit ovkvm that cannot run is refused
   here rather than at each VM's start. Said on stderr. */
static int choose_provider(const char *want)
{
	bool kvm = prov_hw_kvm();
	const char *why = NULL;

	if (!g_m.env.ovkvm) {
		const char *k = sibling("hypervisor", "ovkvm");

		/* from PATH only when asked for by name */
		if (k[0] == '/' || !strcmp(want, "ovkvm"))
			g_m.env.ovkvm = k;
	}
	if (!kvm)
		why = access("/dev/kvm", R_OK | W_OK) < 0
			? "/dev/kvm is missing or not usable"
			: "/dev/kvm is there but the CPU shows neither svm nor "
			  "vmx (a paravirtual KVM cannot run a stock kernel)";
	else if (!g_m.env.ovkvm)
		why = "no ovkvm program beside ovkd (give --ovkvm PATH)";
	if (!strcmp(want, "ovkvm") && why) {
		say("--provider ovkvm: %s; use --provider qemu (QEMU with "
		    "TCG) here", why);
		return -1;
	}
	g_m.provider_auto = !strcmp(want, "auto");
	g_m.provider = !strcmp(want, "qemu") || why ? &provider_qemu
						    : &provider_ovkvm;
	if (g_m.provider_auto)
		say("provider %s (--provider auto: %s)", g_m.provider->name,
		    why ? why : "hardware KVM and ovkvm found; VMs without a "
				"kernel start on QEMU");
	else
		say("provider %s", g_m.provider->name);
	return 0;
}

static void on_signal(int sig)
{
	g_stop = 1;
}

enum on_exit { EXIT_KEEP, EXIT_SHUTDOWN, EXIT_FORCE_OFF };

static unsigned vms_on(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < inv_count(g_m.inv); i++)
		n += inv_at(g_m.inv, i)->power != VM_OFF;
	return n;
}

/* What stopping ovkd does to the running VMs (--on-exit), said on stderr
   VM by VM. */
static void stop_vms(enum on_exit how, unsigned grace_s)
{
	char err[512];
	unsigned on = vms_on();

	if (how == EXIT_KEEP || !on) {
		say("stopping; %u running VM%s left running", on,
		    on == 1 ? "" : "s");
		return;
	}
	say("stopping; powering off %u running VM%s (--on-exit %s)", on,
	    on == 1 ? "" : "s", how == EXIT_SHUTDOWN ? "shutdown"
						     : "force-off");
	pthread_mutex_lock(&g_lock);
	if (how == EXIT_SHUTDOWN) {
		for (unsigned i = 0; i < inv_count(g_m.inv); i++) {
			struct vm *vm = inv_at(g_m.inv, i);
			const struct provider_ops *p = mgmt_provider(&g_m, vm);
			int ret;

			if (vm->power != VM_ON)
				continue;
			ret = p->shutdown(&g_m.env, vm, err, sizeof(err));
			if (ret < 0)
				say("%s", err);
			/* no way to ask this guest (ovkvm): no use waiting */
			if (ret != -ENOTSUP)
				continue;
			if (p->force_off(&g_m.env, vm, err, sizeof(err)) < 0) {
				say("%s", err);
				continue;
			}
			free(vm->last_event);
			vm->last_event = strdup("ForceOff as ovkd stopped (no "
						"power button to press)");
			inv_save(g_m.inv, vm);
			say("%s: forced off", vm->id);
		}
		for (unsigned t = 0; t < grace_s * 10 && vms_on(); t++) {
			struct timespec ts = { 0, 100 * 1000 * 1000 };

			nanosleep(&ts, NULL);
			reap_vm_procs();
			for (unsigned i = 0; i < inv_count(g_m.inv); i++) {
				struct vm *vm = inv_at(g_m.inv, i);

				if (vm->power != VM_OFF &&
				    mgmt_provider(&g_m, vm)->poll(&g_m.env,
								  vm)) {
					inv_save(g_m.inv, vm);
					say("%s: powered off by its guest",
					    vm->id);
				}
			}
		}
	}
	for (unsigned i = 0; i < inv_count(g_m.inv); i++) {
		struct vm *vm = inv_at(g_m.inv, i);

		if (vm->power == VM_OFF)
			continue;
		if (mgmt_provider(&g_m, vm)->force_off(&g_m.env, vm, err,
						       sizeof(err)) < 0) {
			say("%s", err);
			continue;
		}
		free(vm->last_event);
		vm->last_event = strdup("ForceOff as ovkd stopped");
		inv_save(g_m.inv, vm);
		say("%s: forced off%s", vm->id, how == EXIT_SHUTDOWN
			? " (still on after --shutdown-timeout)" : "");
	}
	pthread_mutex_unlock(&g_lock);
}

/* One MHD daemon on a listening fd we made (the unix socket), or on a TCP
   address, with TLS when cert and key are given. */
static struct MHD_Daemon *serve(int fd, const struct sockaddr_in *addr,
				const char *cert, const char *key)
{
	/* a thread per connection: an event stream waits on its own */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD |
			 MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;

	if (cert)
		flags |= MHD_USE_TLS;
	if (fd >= 0)
		return MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
					MHD_OPTION_LISTEN_SOCKET, fd,
					MHD_OPTION_NOTIFY_COMPLETED, on_done,
					NULL,
					MHD_OPTION_CONNECTION_LIMIT, 256u,
					MHD_OPTION_CONNECTION_TIMEOUT, 60u,
					MHD_OPTION_END);
	if (cert)
		return MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
					MHD_OPTION_SOCK_ADDR,
					(const struct sockaddr *)addr,
					MHD_OPTION_HTTPS_MEM_CERT, cert,
					MHD_OPTION_HTTPS_MEM_KEY, key,
					MHD_OPTION_NOTIFY_COMPLETED, on_done,
					NULL,
					MHD_OPTION_CONNECTION_LIMIT, 256u,
					MHD_OPTION_CONNECTION_TIMEOUT, 60u,
					MHD_OPTION_END);
	return MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
				MHD_OPTION_SOCK_ADDR,
				(const struct sockaddr *)addr,
				MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
				MHD_OPTION_CONNECTION_LIMIT, 256u,
				MHD_OPTION_CONNECTION_TIMEOUT, 60u,
				MHD_OPTION_END);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "socket", required_argument, NULL, 'S' },
		{ "tls-cert", required_argument, NULL, 'c' },
		{ "tls-key", required_argument, NULL, 'k' },
		{ "state", required_argument, NULL, 's' },
		{ "auth-file", required_argument, NULL, 'a' },
		{ "pvblk", required_argument, NULL, 'P' },
		{ "qemu", required_argument, NULL, 'Q' },
		{ "accel", required_argument, NULL, 'A' },
		{ "provider", required_argument, NULL, 'R' },
		{ "ovkvm", required_argument, NULL, 'K' },
		{ "on-exit", required_argument, NULL, 'E' },
		{ "shutdown-timeout", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *listen = NULL, *state = "/var/lib/ovkd";
	const char *auth_file = NULL, *sock_opt = NULL;
	const char *cert_file = NULL, *key_file = NULL;
	const char *provider = "auto";
	char *cert = NULL, *key = NULL;
	char run_dir[4096], storage[4096], sock_path[4096], err[512];
	struct sockaddr_in addr;
	struct MHD_Daemon *d_unix = NULL, *d_tcp = NULL;
	pthread_t mon;
	enum on_exit on_exit = EXIT_KEEP;
	unsigned long grace = 30;
	int opt, ret, status = 1, unix_fd;

	g_m.env.qemu = "qemu-system-x86_64";
	while ((opt = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'l': listen = optarg; break;
		case 'S': sock_opt = optarg; break;
		case 'c': cert_file = optarg; break;
		case 'k': key_file = optarg; break;
		case 's': state = optarg; break;
		case 'a': auth_file = optarg; break;
		case 'P': g_m.env.pvblk = optarg; break;
		case 'Q': g_m.env.qemu = optarg; break;
		case 'K': g_m.env.ovkvm = optarg; break;
		case 'R':
			if (strcmp(optarg, "auto") && strcmp(optarg, "qemu") &&
			    strcmp(optarg, "ovkvm")) {
				say("--provider %s: expected auto, qemu or "
				    "ovkvm", optarg);
				return 1;
			}
			provider = optarg;
			break;
		case 'A':
			if (strcmp(optarg, "kvm") && strcmp(optarg, "tcg")) {
				say("--accel %s: expected kvm or tcg", optarg);
				return 1;
			}
			g_m.env.accel = optarg;
			break;
		case 'E':
			if (!strcmp(optarg, "keep"))
				on_exit = EXIT_KEEP;
			else if (!strcmp(optarg, "shutdown"))
				on_exit = EXIT_SHUTDOWN;
			else if (!strcmp(optarg, "force-off"))
				on_exit = EXIT_FORCE_OFF;
			else {
				say("--on-exit %s: expected keep, shutdown or "
				    "force-off", optarg);
				return 1;
			}
			break;
		case 'T': {
			char *end;

			errno = 0;
			grace = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || grace > 3600) {
				say("--shutdown-timeout %s: expected seconds, "
				    "0 to 3600", optarg);
				return 1;
			}
			break;
		}
		case 'h': fputs(usage_text, stdout); return 0;
		case 'V': printf("ovkd (ovk) %s\n", OVK_VERSION); return 0;
		default:
			fputs("Try 'ovkd --help'.\n", stderr);
			return 1;
		}
	}
	if (optind != argc) {
		say("unexpected argument %s", argv[optind]);
		return 1;
	}
	if (!cert_file != !key_file) {
		say("--tls-cert and --tls-key go together");
		return 1;
	}
	if (cert_file && !listen) {
		say("--tls-cert and --tls-key are for --listen HOST:PORT");
		return 1;
	}
	if (listen && listen_parse_tcp(listen, &addr) < 0) {
		say("--listen %s: expected IPV4:PORT", listen);
		return 1;
	}
	if (listen && !cert_file && !listen_is_loopback(&addr)) {
		say("--listen %s: plain HTTP is only for loopback addresses "
		    "(127.0.0.0/8); give --tls-cert and --tls-key to serve "
		    "HTTPS there", listen);
		return 1;
	}
	if (cert_file &&
	    (listen_read_pem(cert_file, &cert, err, sizeof(err)) < 0 ||
	     listen_read_pem(key_file, &key, err, sizeof(err)) < 0)) {
		say("%s", err);
		goto out_free;
	}
	if (!g_m.env.pvblk)
		g_m.env.pvblk = sibling("pvblk", "pvblk");
	g_m.ovf_tool = sibling("ovffs", "ovf");
	g_m.ovkdisk_tool = sibling("livedisk", "ovkdisk");
	g_m.lock = &g_lock;
	ret = inv_open(state, &g_m.inv);
	if (ret < 0) {
		say("state folder %s: %s", state, strerror(-ret));
		goto out_free;
	}
	if (load_identity(state, auth_file) < 0)
		goto out_inv;
	snprintf(run_dir, sizeof(run_dir), "%s/run", state);
	snprintf(storage, sizeof(storage), "%s/disks", state);
	snprintf(sock_path, sizeof(sock_path), "%s",
		 sock_opt ? sock_opt : "");
	if (!sock_opt)
		snprintf(sock_path, sizeof(sock_path), "%s/ovkd.sock", state);
	g_m.env.run_dir = run_dir;
	g_m.storage_dir = storage;
	if (choose_provider(provider) < 0)
		goto out_inv;
	for (unsigned i = 0; i < inv_count(g_m.inv); i++) {
		struct vm *vm = inv_at(g_m.inv, i);

		vm->power_told = vm->power;
		if (vm->power != VM_OFF && vm_proc_alive(&vm->vmm))
			say("%s: found running (%s pid %d)", vm->id,
			    mgmt_provider(&g_m, vm)->name, (int)vm->vmm.pid);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	/* TCP first: once the unix socket answers, every listener does */
	if (listen) {
		d_tcp = serve(-1, &addr, cert, key);
		if (!d_tcp) {
			say("cannot listen on %s%s: %s", listen,
			    cert ? " (HTTPS: is the key the certificate's?)"
				 : "", strerror(errno));
			goto out_inv;
		}
	}
	unix_fd = listen_unix(sock_path, err, sizeof(err));
	if (unix_fd < 0) {
		say("%s", err);
		goto out_stop;
	}
	d_unix = serve(unix_fd, NULL, NULL, NULL);
	if (!d_unix) {
		say("socket %s: the HTTP server did not start", sock_path);
		close(unix_fd);
		unlink(sock_path);
		goto out_stop;
	}
	pthread_create(&mon, NULL, monitor, NULL);
	say("Redfish API on unix socket %s (%u VMs in %s)", sock_path,
	    inv_count(g_m.inv), state);
	if (listen)
		say("Redfish API on %s://%s/redfish/v1/",
		    cert ? "https" : "http", listen);
	/* not pause(): SIGTERM may be taken by any thread (the monitor,
	   libmicrohttpd's), and then a pause() here would never return */
	while (!g_stop)
		nanosleep(&(struct timespec){ .tv_nsec = 100000000 }, NULL);
	pthread_join(mon, NULL);
	events_stop(); /* event streams end: let them say so to clients */
	for (int i = 0; i < 200 && atomic_load(&g_streams); i++)
		nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
	stop_vms(on_exit, (unsigned)grace);
	status = 0;
	MHD_stop_daemon(d_unix); /* closes unix_fd */
	unlink(sock_path);
out_stop:
	if (d_tcp)
		MHD_stop_daemon(d_tcp);
out_inv:
	inv_close(g_m.inv);
out_free:
	free(cert);
	free(key);
	return status;
}
