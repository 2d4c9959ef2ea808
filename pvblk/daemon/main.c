/* SPDX-License-Identifier: Apache-2.0 */
/* main.c - the pvblk daemon: serve one disk image, or several (--export),
   over NBD and/or vhost-user-blk until SIGTERM. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "control.h"
#include "pvblk.h"

#define MAX_LISTEN 128
#define MAX_EXPORTS 32
#define MAX_NBD_ADDR 8

static const char usage_text[] =
"Usage: pvblk [OPTIONS] --nbd ADDRESS | --vhost-user-blk SOCKET ... IMAGE\n"
"       pvblk [OPTIONS] [--nbd ADDRESS] --export IMAGE,name=NAME,... ...\n"
"\n"
"Serve the disk image IMAGE (a VMDK of any subformat, a delta chain, or a\n"
"raw file) to running virtual machines and to block clients, through ovk's\n"
"engine. pvblk stays in the foreground; each socket exists once it accepts.\n"
"SIGTERM or SIGINT stops the servers, flushes and closes the image and\n"
"releases its lock.\n"
"\n"
"Protocols (each may be given several times, all serve the same image):\n"
"  --vhost-user-blk SOCKET  a vhost-user-blk backend on the unix socket\n"
"                           SOCKET, for QEMU's vhost-user-blk-pci device\n"
"  --num-queues N           virtqueues of each vhost-user-blk device\n"
"                           (default 1), one thread and io_uring each\n"
"  --poll-us N              before a virtqueue's thread sleeps, it polls\n"
"                           the ring for new requests for up to N\n"
"                           microseconds (default 32; 0: never), as\n"
"                           QEMU's IOThreads do: a request that comes\n"
"                           within the window is served without a wake-up\n"
"                           and, with EVENT_IDX, without a kick. The window\n"
"                           adapts: it grows while requests come soon\n"
"                           after a sleep and shrinks to nothing on an\n"
"                           idle disk, which so costs no CPU\n"
"  --nbd unix:PATH|tcp:HOST:PORT\n"
"                           an NBD server (fixed newstyle; structured\n"
"                           replies, extended headers with 64-bit\n"
"                           lengths, base:allocation, qemu:allocation-\n"
"                           depth, qemu:dirty-bitmap:CHECKPOINT); TCP\n"
"                           needs --tls-creds or --tls-psk unless HOST is\n"
"                           a loopback address\n"
"  --export-name NAME       the NBD export's name (default: \"\")\n"
"  --tls-creds DIR          NBD over TLS with the X.509 files in DIR\n"
"                           (ca-cert.pem, server-cert.pem, server-key.pem)\n"
"  --tls-psk FILE           NBD over TLS with a pre-shared key: FILE holds\n"
"                           USERNAME:HEXKEY lines (psktool -u NAME -p FILE;\n"
"                           QEMU's tls-creds-psk keys.psk, libnbd's\n"
"                           tls-psk-file); a client must name a user of the\n"
"                           file and hold its key. Read at each handshake,\n"
"                           so a changed key applies to the next client.\n"
"                           With either TLS option a client that does not\n"
"                           start TLS is refused.\n"
"\n"
"Image options:\n"
"  -o ro                    read-only (the default): writes are refused\n"
"  -o rw                    read-write; the image is locked against a\n"
"                           second writer (pvblk, vmdkfs, vmdk, QEMU).\n"
"                           A view's delta IMAGE-live-N.vmdk left by a\n"
"                           pvblk that died holds the latest writes: it\n"
"                           is merged into IMAGE first (also with -o\n"
"                           snapshot; -o ro warns that IMAGE is stale)\n"
"  -o snapshot[=CHILD]      writes go to a new delta child CHILD (default\n"
"                           IMAGE-snapshot-DATE.vmdk beside IMAGE); IMAGE\n"
"                           stays untouched\n"
"  -f, --format FORMAT      raw or vmdk (default: probed)\n"
"\n"
"Several images in one pvblk (instead of IMAGE, -o, -f, --vhost-user-blk\n"
"and --export-name; may be given up to 32 times):\n"
"  --export IMAGE,name=NAME[,ro|rw|snapshot[=CHILD]][,format=FMT]\n"
"           [,vhost-user-blk=SOCKET][,num-queues=N][,nbd]\n"
"                           serve IMAGE (a path without commas) as the\n"
"                           export NAME: its own engine handle, image lock\n"
"                           and mode (ro by default, as -o above);\n"
"                           vhost-user-blk=SOCKET gives it a vhost-user-blk\n"
"                           socket of its own with N virtqueues (default\n"
"                           --num-queues, else 1); nbd offers it on the\n"
"                           --nbd socket(s), where clients pick it by NAME\n"
"                           (NBD_OPT_LIST lists every export, with its image\n"
"                           as description; the name \"\" is the first).\n"
"                           Names must be unique and an image may be\n"
"                           served by one export only. When one export\n"
"                           cannot start, those started before it stop\n"
"                           again (no snapshot child or socket stays)\n"
"\n"
"Control:\n"
"  --api-socket PATH        a JSON control socket (unix, mode 0600): one\n"
"                           request per line, one reply per line, e.g.\n"
"                           {\"command\": \"status\"} answers\n"
"                           {\"return\": {...}} or {\"error\": \"...\"}.\n"
"                           Every command takes \"export\": NAME, the export\n"
"                           it is about (default: the first, or the one\n"
"                           IMAGE). Commands (members besides \"command\"):\n"
"                           status: the export's image, mode, chain, size,\n"
"                             checkpoints, engine cache counters and open\n"
"                             view; \"exports\": every export with its\n"
"                             name, image, mode, protocols, \"listeners\"\n"
"                             (protocol, address, queues, NBD connections,\n"
"                             io) and summed \"io\": requests answered,\n"
"                             read_bytes and written_bytes (data of\n"
"                             successful reads and writes), errors (since\n"
"                             start, clients gone included), and for\n"
"                             vhost-user-blk \"vrings\": index, requests and\n"
"                             \"broken\" (why the ring stopped, or null)\n"
"                           export-list: every export's name, image, mode,\n"
"                             size and protocols\n"
"                           checkpoint-create, checkpoint-delete (\"name\")\n"
"                           checkpoint-list\n"
"                           changed (\"since\", optional \"offset\" and\n"
"                             \"length\"): the extents [offset, length]\n"
"                             written since that checkpoint, at most 8192\n"
"                             a reply; \"next\" is where to ask on, or null\n"
"                           view-create (optional \"checkpoint\": start that\n"
"                             checkpoint first; \"nbd\": \"unix:PATH\":\n"
"                             export the view read-only there): freeze the\n"
"                             running disk's top layer as a point-in-time\n"
"                             view (a delta child beside it takes the\n"
"                             writes); answers the view's \"path\", which\n"
"                             vmdkfs or vmdk can open read-only, and \"nbd\"\n"
"                           view-release: close the view's export and merge\n"
"                             the child back into it while the disk runs\n"
"                             (fails while another program holds the view)\n"
"                           grow (\"size\" in bytes): a larger image, when\n"
"                             the engine can grow an open disk; a vhost-user\n"
"                             front end is told at once (its guest sees the\n"
"                             new capacity), NBD clients when they connect\n"
"                           Lines longer than 4096 bytes are refused and the\n"
"                           client is hung up on; at most 8 clients at once.\n"
"  -h, --help               this text\n"
"  -V, --version            the version\n"
"\n"
"Examples:\n"
"  pvblk -o rw --vhost-user-blk /run/disk0.sock --num-queues 2 disk.vmdk\n"
"  qemu-system-x86_64 -m 1G \\\n"
"    -object memory-backend-memfd,id=mem,size=1G,share=on \\\n"
"    -machine pc,memory-backend=mem \\\n"
"    -chardev socket,id=vu0,path=/run/disk0.sock \\\n"
"    -device vhost-user-blk-pci,chardev=vu0,num-queues=2 ...\n"
"\n"
"  pvblk --nbd unix:/run/disk0.nbd disk.vmdk &\n"
"  qemu-img info 'nbd+unix:///?socket=/run/disk0.nbd'\n"
"  nbdinfo --map 'nbd+unix:///?socket=/run/disk0.nbd'\n"
"\n"
"  pvblk --nbd unix:/run/disks.nbd --api-socket /run/disks.api \\\n"
"    --export vm1.vmdk,name=vm1,rw,vhost-user-blk=/run/vm1.sock,nbd \\\n"
"    --export base.vmdk,name=test,snapshot,nbd \\\n"
"    --export iso.raw,name=iso,ro,format=raw,nbd &\n"
"  nbdinfo --list 'nbd+unix:///?socket=/run/disks.nbd'\n"
"  qemu-img info 'nbd+unix:///test?socket=/run/disks.nbd'\n"
"  ovkdisk backup /run/disks.api /backup/vm1 --export vm1\n"
"\n"
"As a service: pvblk stays in the foreground and logs to stderr; under\n"
"systemd use Type=notify: with $NOTIFY_SOCKET set it sends READY=1 once\n"
"every socket accepts and STOPPING=1 on SIGTERM (docs/pvblk@.service).\n"
"\n"
"Exit status: 0 after a clean stop, 1 on a usage error or when an image\n"
"or a socket cannot be opened, 2 when closing an image failed.\n";

enum { OPT_NBD = 256, OPT_VU, OPT_QUEUES, OPT_POLL, OPT_NAME, OPT_TLS,
       OPT_PSK, OPT_API, OPT_EXPORT };

static const struct option long_opts[] = {
	{ "nbd", required_argument, NULL, OPT_NBD },
	{ "vhost-user-blk", required_argument, NULL, OPT_VU },
	{ "num-queues", required_argument, NULL, OPT_QUEUES },
	{ "poll-us", required_argument, NULL, OPT_POLL },
	{ "export-name", required_argument, NULL, OPT_NAME },
	{ "tls-creds", required_argument, NULL, OPT_TLS },
	{ "tls-psk", required_argument, NULL, OPT_PSK },
	{ "api-socket", required_argument, NULL, OPT_API },
	{ "export", required_argument, NULL, OPT_EXPORT },
	{ "format", required_argument, NULL, 'f' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ 0 },
};

/* One --export IMAGE,name=NAME[,...] as given. */
struct export_spec {
	const char *image, *name, *mode, *child, *format;
	const char *vhost_user_blk; /* its own socket, or NULL */
	unsigned num_queues;        /* 0: --num-queues, else 1 */
	bool nbd;                   /* on the --nbd listener(s) */
};

struct cmdline {
	struct pvblk_listen listen[MAX_LISTEN];
	unsigned nlisten;
	const char *mode, *child, *format, *image;
	const char *export_name, *tls_creds, *tls_psk;
	const char *api_socket;
	unsigned num_queues;
	long poll_us; /* -1: not given */
	bool o_given, vu_given; /* image options outside --export */
	struct export_spec spec[MAX_EXPORTS];
	unsigned nspec;
};

/* The running daemon: its exports and the listeners serving them. */
struct daemon {
	struct pvblk_export exports[MAX_EXPORTS];
	unsigned nexports;
};

static int add_listen(struct cmdline *c, const struct pvblk_protocol *p,
		      const char *what, const char *addr)
{
	struct pvblk_listen *l;

	if (!p) {
		pvblk_log("%s is not built into this pvblk", what);
		return -1;
	}
	if (c->nlisten == MAX_LISTEN) {
		pvblk_log("at most %d sockets", MAX_LISTEN);
		return -1;
	}
	l = &c->listen[c->nlisten++];
	l->proto = p;
	l->address = addr;
	l->num_queues = 1;
	return 0;
}

/* -o ro | rw | snapshot[=CHILD], comma-separated. */
static int parse_o(struct cmdline *c, char *arg)
{
	char *save = NULL, *tok;

	for (tok = strtok_r(arg, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (!strcmp(tok, "ro") || !strcmp(tok, "rw") ||
		    !strcmp(tok, "snapshot")) {
			c->mode = tok;
		} else if (!strncmp(tok, "snapshot=", 9) && tok[9]) {
			c->mode = "snapshot";
			c->child = tok + 9;
		} else {
			pvblk_log("unknown -o option '%s' (expected ro, rw or "
				  "snapshot[=CHILD])", tok);
			return -1;
		}
	}
	return 0;
}

/* --num-queues N or num-queues=N: 1 to 64. */
static int parse_queues(const char *what, const char *arg, unsigned *out)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(arg, &end, 10);
	if (errno || *end || !*arg || n < 1 || n > 64) {
		pvblk_log("%s %s: expected 1 to 64", what, arg);
		return -1;
	}
	*out = (unsigned)n;
	return 0;
}

/* An export's name: what NBD clients and the control socket call it. */
static int check_export_name(const char *arg, const char *name)
{
	size_t n = strlen(name);

	if (n < 1 || n > 255) {
		pvblk_log("--export %s: name= must be 1 to 255 bytes", arg);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] <= 0x20 || name[i] == 0x7f) {
			pvblk_log("--export %s: name= may hold no spaces or "
				  "control characters", arg);
			return -1;
		}
	return 0;
}

/* --export IMAGE,name=NAME[,ro|rw|snapshot[=CHILD]][,format=FMT]
   [,vhost-user-blk=SOCKET][,num-queues=N][,nbd]. IMAGE holds no comma. */
static int parse_export(struct cmdline *c, char *arg)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	struct export_spec *e;

	if (!copy)
		return -1;
	if (c->nspec == MAX_EXPORTS) {
		pvblk_log("at most %d --export options", MAX_EXPORTS);
		return -1;
	}
	e = &c->spec[c->nspec++];
	e->mode = "ro";
	e->image = strtok_r(arg, ",", &save);
	if (!e->image || strchr(e->image, '=')) {
		pvblk_log("--export %s: expected IMAGE first, then "
			  "name=NAME and the options", copy);
		goto err;
	}
	while ((tok = strtok_r(NULL, ",", &save))) {
		if (!strncmp(tok, "name=", 5)) {
			e->name = tok + 5;
			if (check_export_name(copy, e->name) < 0)
				goto err;
		} else if (!strcmp(tok, "ro") || !strcmp(tok, "rw") ||
			   !strcmp(tok, "snapshot")) {
			e->mode = tok;
		} else if (!strncmp(tok, "snapshot=", 9) && tok[9]) {
			e->mode = "snapshot";
			e->child = tok + 9;
		} else if (!strncmp(tok, "format=", 7) && tok[7]) {
			e->format = tok + 7;
		} else if (!strncmp(tok, "vhost-user-blk=", 15) && tok[15]) {
			e->vhost_user_blk = tok + 15;
		} else if (!strncmp(tok, "num-queues=", 11)) {
			if (parse_queues("--export num-queues=", tok + 11,
					 &e->num_queues) < 0)
				goto err;
		} else if (!strcmp(tok, "nbd")) {
			e->nbd = true;
		} else {
			pvblk_log("--export %s: unknown option '%s' (expected "
				  "name=NAME, ro, rw, snapshot[=CHILD], "
				  "format=FMT, vhost-user-blk=SOCKET, "
				  "num-queues=N, nbd)", copy, tok);
			goto err;
		}
	}
	if (!e->name) {
		pvblk_log("--export %s: give the export a name=NAME", copy);
		goto err;
	}
	if (e->num_queues && !e->vhost_user_blk) {
		pvblk_log("--export %s: num-queues= is for a vhost-user-blk= "
			  "socket, and this export has none", copy);
		goto err;
	}
	if (!e->nbd && !e->vhost_user_blk) {
		pvblk_log("--export %s: serves nothing: add nbd or "
			  "vhost-user-blk=SOCKET", copy);
		goto err;
	}
	for (unsigned i = 0; i + 1 < c->nspec; i++) {
		const struct export_spec *o = &c->spec[i];

		if (!strcmp(o->name, e->name)) {
			pvblk_log("--export %s: the name '%s' is taken by "
				  "export %u (%s); names must be unique", copy,
				  e->name, i + 1, o->image);
			goto err;
		}
		if (e->vhost_user_blk && o->vhost_user_blk &&
		    !strcmp(o->vhost_user_blk, e->vhost_user_blk)) {
			pvblk_log("--export %s: the socket %s is export '%s''s "
				  "already; each export needs its own", copy,
				  e->vhost_user_blk, o->name);
			goto err;
		}
	}
	free(copy);
	return 0;
err:
	free(copy);
	return -1;
}

/* With --export the image options go inside each --export; and every
   export needs the sockets it names. */
static int check_exports(struct cmdline *c)
{
	bool any_nbd = false;
	unsigned nnbd = 0;

	if (c->o_given || c->format || c->vu_given || c->export_name) {
		pvblk_log("with --export, give -o, -f, --vhost-user-blk and "
			  "--export-name inside each --export (ro, rw, "
			  "snapshot, format=, vhost-user-blk=, name=)");
		return -1;
	}
	for (unsigned i = 0; i < c->nspec; i++)
		any_nbd |= c->spec[i].nbd;
	for (unsigned i = 0; i < c->nlisten; i++)
		nnbd += c->listen[i].proto == pvblk_protocol_nbd;
	if (any_nbd && !nnbd) {
		pvblk_log("an --export has nbd but no --nbd ADDRESS says "
			  "where to listen");
		return -1;
	}
	if (!any_nbd && nnbd) {
		pvblk_log("--nbd given but no --export has nbd: add nbd to the "
			  "exports to serve there");
		return -1;
	}
	if (nnbd > MAX_NBD_ADDR) {
		pvblk_log("at most %d --nbd with --export", MAX_NBD_ADDR);
		return -1;
	}
	/* one image, one export: the second would find it locked (or, read
	   only, serve a disk that the first changes under it) */
	for (unsigned i = 0; i < c->nspec; i++) {
		struct stat a, b;
		bool file = stat(c->spec[i].image, &a) == 0;

		/* not a file (rbd:..., or missing): the same name is the
		   same image; opening a missing one says why */
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(c->spec[j].image, c->spec[i].image) ||
			    (file && stat(c->spec[j].image, &b) == 0 &&
			     a.st_dev == b.st_dev && a.st_ino == b.st_ino)) {
				pvblk_log("exports '%s' and '%s' both name the "
					  "image %s%s%s: an image can be served "
					  "by one export only", c->spec[j].name,
					  c->spec[i].name, c->spec[i].image,
					  strcmp(c->spec[i].image,
						 c->spec[j].image) ? " = " : "",
					  strcmp(c->spec[i].image,
						 c->spec[j].image) ?
						  c->spec[j].image : "");
				return -1;
			}
	}
	return 0;
}

/* Turn the --export options into listeners: each export's own
   vhost-user-blk socket, and for each --nbd address the first nbd export
   listening there and the others sharing its socket. */
static int plan_exports(struct cmdline *c, struct daemon *d)
{
	struct pvblk_listen nbd[MAX_NBD_ADDR];
	unsigned nnbd = 0, n = 0;
	struct pvblk_listen *out = c->listen;

	for (unsigned i = 0; i < c->nlisten; i++)
		nbd[nnbd++] = c->listen[i]; /* only --nbd: checked */
	for (unsigned i = 0; i < c->nspec; i++) {
		const struct export_spec *e = &c->spec[i];
		unsigned need = (e->vhost_user_blk ? 1 : 0) +
				(e->nbd ? nnbd : 0);

		if (n + need > MAX_LISTEN) {
			pvblk_log("at most %d sockets", MAX_LISTEN);
			return -1;
		}
		if (e->vhost_user_blk) {
			if (!pvblk_protocol_vhost_user_blk) {
				pvblk_log("vhost-user-blk is not built into "
					  "this pvblk");
				return -1;
			}
			out[n++] = (struct pvblk_listen){
				.proto = pvblk_protocol_vhost_user_blk,
				.address = e->vhost_user_blk,
				.num_queues = e->num_queues ? e->num_queues :
					      c->num_queues ? c->num_queues : 1,
				.export = &d->exports[i],
			};
		}
	}
	/* the NBD listeners after every vhost-user socket: out[] must not
	   move once a share points into it */
	for (unsigned a = 0; a < nnbd; a++) {
		struct pvblk_listen *first = NULL;

		for (unsigned i = 0; i < c->nspec; i++) {
			if (!c->spec[i].nbd)
				continue;
			if (n == MAX_LISTEN) {
				pvblk_log("at most %d sockets", MAX_LISTEN);
				return -1;
			}
			out[n] = nbd[a];
			out[n].export_name = c->spec[i].name;
			out[n].export = &d->exports[i];
			out[n].share = first;
			if (!first)
				first = &out[n];
			n++;
		}
	}
	c->nlisten = n;
	return 0;
}

static int parse(struct cmdline *c, int argc, char **argv)
{
	int opt;

	c->mode = "ro";
	c->poll_us = -1;
	while ((opt = getopt_long(argc, argv, "o:f:hV", long_opts, NULL)) !=
	       -1) {
		char *end;
		unsigned long n;

		switch (opt) {
		case 'o':
			c->o_given = true;
			if (parse_o(c, optarg) < 0)
				return -1;
			break;
		case OPT_EXPORT:
			if (parse_export(c, optarg) < 0)
				return -1;
			break;
		case 'f':
			c->format = optarg;
			break;
		case OPT_NBD:
			if (add_listen(c, pvblk_protocol_nbd, "--nbd",
				       optarg) < 0)
				return -1;
			break;
		case OPT_VU:
			c->vu_given = true;
			if (add_listen(c, pvblk_protocol_vhost_user_blk,
				       "--vhost-user-blk", optarg) < 0)
				return -1;
			break;
		case OPT_QUEUES:
			if (parse_queues("--num-queues", optarg,
					 &c->num_queues) < 0)
				return -1;
			break;
		case OPT_POLL:
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || optarg[0] == '-' ||
			    n > 1000000) {
				pvblk_log("--poll-us %s: expected 0 to 1000000 "
					  "microseconds", optarg);
				return -1;
			}
			c->poll_us = (long)n;
			break;
		case OPT_NAME:
			c->export_name = optarg;
			break;
		case OPT_TLS:
			c->tls_creds = optarg;
			break;
		case OPT_PSK:
			c->tls_psk = optarg;
			break;
		case OPT_API:
			c->api_socket = optarg;
			break;
		case 'h':
			fputs(usage_text, stdout);
			exit(0);
		case 'V':
			printf("pvblk (ovk) %s\n", OVK_VERSION);
			exit(0);
		default:
			fputs("Try 'pvblk --help'.\n", stderr);
			return -1;
		}
	}
	if (c->nspec) {
		if (optind != argc) {
			pvblk_log("with --export, give no IMAGE ('%s'): each "
				  "--export names its own", argv[optind]);
			fputs("Try 'pvblk --help'.\n", stderr);
			return -1;
		}
		if (check_exports(c) < 0)
			return -1;
	} else if (optind != argc - 1) {
		pvblk_log(optind == argc ? "no IMAGE given"
					 : "more than one IMAGE given");
		fputs("Try 'pvblk --help'.\n", stderr);
		return -1;
	} else {
		c->image = argv[optind];
		if (!c->nlisten) {
			pvblk_log("nothing to serve: give --nbd or "
				  "--vhost-user-blk");
			return -1;
		}
	}
	/* these options apply to every socket, wherever they stand */
	for (unsigned i = 0; i < c->nlisten; i++) {
		struct pvblk_listen *l = &c->listen[i];

		if (c->num_queues && !c->nspec)
			l->num_queues = c->num_queues;
		l->poll_us = c->poll_us < 0 ? PVBLK_POLL_US_DEFAULT
					    : (unsigned)c->poll_us;
		l->export_name = c->export_name;
		l->tls_creds = c->tls_creds;
		l->tls_psk = c->tls_psk;
	}
	if (c->tls_creds && c->tls_psk) {
		pvblk_log("give --tls-creds or --tls-psk, not both");
		return -1;
	}
	return 0;
}

/* Open every export, in command-line order; on failure close (and
   discard: no snapshot child stays) those already open. */
static int open_exports(struct cmdline *c, struct daemon *d)
{
	if (!c->nspec) {
		c->spec[0] = (struct export_spec){
			.image = c->image, .mode = c->mode, .child = c->child,
			.format = c->format,
			.name = c->export_name ? c->export_name : "",
		};
	}
	for (unsigned i = 0; i < (c->nspec ? c->nspec : 1); i++) {
		const struct export_spec *e = &c->spec[i];

		if (pvblk_recover_views(e->image, strcmp(e->mode, "ro")) < 0 ||
		    pvblk_export_open(&d->exports[i], e->image, e->mode,
				      e->child, e->format) < 0) {
			if (c->nspec)
				pvblk_log("export '%s' (%s) cannot start; "
					  "stopping the %u started before it",
					  e->name, e->image, i);
			while (i)
				pvblk_export_close(&d->exports[--i], true);
			return -1;
		}
		d->exports[i].name = e->name;
		d->nexports = i + 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct cmdline c;
	static struct daemon d;
	struct pvblk_ctl *ctl = NULL;
	sigset_t stop_set;
	char err[1024];
	unsigned started = 0;
	int sig, status = 0;

	if (parse(&c, argc, argv) < 0 ||
	    (c.nspec && plan_exports(&c, &d) < 0))
		return 1;
	/* Every thread the servers start inherits this mask, so SIGTERM and
	   SIGINT reach only sigwait() below; a client that goes away must
	   not kill the daemon with SIGPIPE. */
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGTERM);
	sigaddset(&stop_set, SIGINT);
	sigaddset(&stop_set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (open_exports(&c, &d) < 0)
		return 1;
	for (; started < c.nlisten; started++) {
		struct pvblk_listen *l = &c.listen[started];
		struct pvblk_export *e;

		if (!l->export)
			l->export = &d.exports[0];
		e = l->export;
		err[0] = '\0';
		if (l->proto->start(l, err, sizeof(err)) < 0) {
			if (c.nspec)
				pvblk_log("export '%s': %s %s: %s", e->name,
					  l->proto->name, l->address,
					  err[0] ? err : "cannot start");
			else
				pvblk_log("%s %s: %s", l->proto->name,
					  l->address,
					  err[0] ? err : "cannot start");
			status = 1;
			goto stop;
		}
		if (c.nspec)
			pvblk_log("serving %s as export '%s' over %s at %s%s",
				  e->image, e->name, l->proto->name,
				  l->address, e->read_only ? " (read-only)"
							   : "");
		else
			pvblk_log("serving %s over %s at %s%s", e->image,
				  l->proto->name, l->address,
				  e->read_only ? " (read-only)" : "");
	}
	if (c.api_socket) {
		if (pvblk_ctl_start(c.api_socket, d.exports, d.nexports,
				    c.listen, c.nlisten, &ctl) < 0) {
			status = 1;
			goto stop;
		}
		pvblk_log("control socket at %s", c.api_socket);
	}
	/* every socket accepts: a Type=notify service is up */
	pvblk_service_notify("READY=1");
	while (sigwait(&stop_set, &sig) == 0 && sig == SIGHUP)
		; /* nothing to reload yet */
	pvblk_log("%s: stopping", strsignal(sig));
	pvblk_service_notify("STOPPING=1");
stop:
	pvblk_ctl_stop(ctl);
	while (started) {
		struct pvblk_listen *l = &c.listen[--started];

		l->proto->stop(l);
	}
	/* each export flushes and closes even when one before it failed;
	   a failed start discards what it made (snapshot children) */
	{
		bool discard = status != 0;

		while (d.nexports)
			if (pvblk_export_close(&d.exports[--d.nexports],
					       discard) < 0 && !status)
				status = 2;
	}
	return status;
}
