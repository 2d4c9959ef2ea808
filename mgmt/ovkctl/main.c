/* SPDX-License-Identifier: Apache-2.0 */
/* ovkctl - the command line for people (and scripts, with --output=json)
   over ovkd's Redfish API. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "console.h"
#include "units.h"

static const char usage_text[] =
"Usage: ovkctl [OPTIONS] COMMAND [ARGUMENTS]\n"
"\n"
"Manage the virtual machines of an ovkd (ovkd(8)) from the command line.\n"
"ovkctl drives ovkd's Redfish API: over ovkd's unix socket by default, or\n"
"over HTTPS with --url. Every command prints a short human answer (a\n"
"table or one line), or with --output=json the API's JSON for scripts.\n"
"\n"
"Commands:\n"
"  list                    the VMs: id, power, CPUs, memory, disks, name\n"
"  show ID                 one VM in full\n"
"  deploy PACKAGE          deploy an OVF package or OVA archive (a path on\n"
"                          ovkd's host) as a new VM; prints its id\n"
"  start ID                power on (Redfish ResetType On)\n"
"  stop ID                 ask the guest to power off (GracefulShutdown)\n"
"  force-off ID            power off at once (ForceOff)\n"
"  restart ID              reset the VM (ForceRestart)\n"
"  pause ID                pause the vCPUs (Pause)\n"
"  resume ID               resume them (Resume)\n"
"  delete ID               remove a VM that is off, and the disks deploy\n"
"                          imported for it\n"
"  export ID OVA           write a VM that is off as an OVA archive (or a\n"
"                          package folder when OVA ends in /)\n"
"  stats ID                CPU time and resident memory of the VMM, disk\n"
"                          servers running, each disk's size and state,\n"
"                          and its I/O counters when ovkd reports them\n"
"  snapshot ID [NAME]      take checkpoint NAME (default snap-TIME) of\n"
"                          every disk of a running VM: the point later\n"
"                          changes are counted from (ovkd's Checkpoint\n"
"                          action, a task); prints the disks' checkpoints\n"
"  backup ID DIR           back up every disk of a running VM into DIR on\n"
"                          ovkd's host, disk N in DIR/diskN (ovkdisk's\n"
"                          folder: a streamOptimized VMDK for a full\n"
"                          backup, a delta VMDK of the blocks changed since\n"
"                          the last one for an incremental, manifest.json;\n"
"                          check it with ovkdisk verify DIR/diskN). Runs as\n"
"                          an ovkd task whose progress is shown on stderr\n"
"  console ID              attach this terminal to the VM's serial\n"
"                          console; detach with Ctrl-] (the console\n"
"                          socket is on ovkd's host: use it there). With\n"
"                          input from a pipe, that input is sent and the\n"
"                          answer printed until the VM is quiet for 1 s\n"
"\n"
"Where ovkd is:\n"
"  --state DIR             ovkd's state folder (default /var/lib/ovkd):\n"
"                          the socket is DIR/ovkd.sock and the\n"
"                          credentials DIR/credentials when readable\n"
"  --socket PATH           ovkd's unix socket (default DIR/ovkd.sock)\n"
"  --url https://HOST:PORT ovkd over HTTPS (ovkd's --listen with a\n"
"                          certificate) instead of the socket\n"
"  --cacert FILE           the CA certificate (PEM) to check its\n"
"                          certificate against (default: the system's)\n"
"\n"
"Credentials (HTTP Basic, asked on every listener):\n"
"  --user USER             the user (default: from the credentials file,\n"
"                          else admin)\n"
"  --password-file FILE    a file whose first line is USER:PASSWORD as in\n"
"                          ovkd's --auth-file (default DIR/credentials),\n"
"                          or with --user USER a line that is not\n"
"                          USER:... is the password as it stands\n"
"\n"
"Command options:\n"
"  --name NAME             deploy: the VM's name (default: the package's)\n"
"  --start                 deploy: power the VM on once it is deployed\n"
"  --allow-unverified      deploy: accept a package without a manifest\n"
"  --full                  backup: a full backup even when an incremental\n"
"                          one is possible (default: incremental when DIR\n"
"                          holds an earlier backup and the disk its\n"
"                          checkpoint)\n"
"  --incremental           backup: fail unless an incremental one is\n"
"                          possible\n"
"  --output=json           print JSON: list, an array of ComputerSystem\n"
"                          documents; show, deploy and the power commands,\n"
"                          the VM's ComputerSystem; stats, a summary\n"
"                          object; delete and export, {\"Id\": ...};\n"
"                          snapshot and backup, the finished Redfish Task\n"
"                          (its Oem.Ovk.Result lists each disk's backup\n"
"                          as ovkdisk --output=json prints it)\n"
"  -h, --help              this text\n"
"  -V, --version           the version\n"
"\n"
"Exit status:\n"
"  0 done; 1 ovkd refused or could not be reached (the message names the\n"
"  URL or the VM, the HTTP status and ovkd's Redfish error message);\n"
"  2 the command line is wrong.\n"
"\n"
"Examples:\n"
"  ovkctl list\n"
"  ovkctl --state /srv/ovkd deploy /srv/app.ova --name web --start\n"
"  ovkctl show web --output=json | jq .PowerState\n"
"  ovkctl stop web; ovkctl force-off web\n"
"  ovkctl stats web\n"
"  ovkctl console web\n"
"  ovkctl export web /srv/out/web.ova && ovkctl delete web\n"
"  ovkctl snapshot web before-upgrade\n"
"  ovkctl backup web /srv/backup/web          # full, then incremental\n"
"  ovkdisk verify /srv/backup/web/disk0\n"
"  ovkctl --url https://mgmt.example:8443 --cacert ca.pem \\\n"
"         --user admin --password-file pw list\n";

struct opts {
	bool json, start, allow_unverified;
	const char *name;
	const char *backup_type; /* --full, --incremental, or NULL */
};

static int usage_error(const char *fmt, const char *arg)
{
	fputs("ovkctl: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\nTry 'ovkctl --help'.\n", stderr);
	return 2;
}

static void print_json(json_t *doc)
{
	char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s) {
		puts(s);
		free(s);
	}
}

/* An id as it may appear in a URL path: no slash, no dot-only names. */
static bool id_ok(const char *id)
{
	return *id && !strchr(id, '/') && !strchr(id, '?') &&
	       !strchr(id, '#') && strcmp(id, ".") && strcmp(id, "..");
}

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static json_t *details(json_t *sys)
{
	return json_object_get(json_object_get(json_object_get(sys, "Oem"),
					       "Ovk"), "Details");
}

static double mem_mib(json_t *sys)
{
	return json_number_value(json_object_get(json_object_get(
		sys, "MemorySummary"), "TotalSystemMemoryGiB")) * 1024;
}

static int get_system(struct ctl_client *c, const char *id, json_t **sys)
{
	char path[600];

	snprintf(path, sizeof(path), "/redfish/v1/Systems/%s", id);
	return ctl_expect(c, "GET", path, NULL, 200, sys);
}

static int cmd_list(struct ctl_client *c, const struct opts *o)
{
	json_t *col, *m, *all = json_array();
	size_t i;
	int ret;

	ret = ctl_expect(c, "GET", "/redfish/v1/Systems", NULL, 200, &col);
	if (ret < 0)
		goto out;
	json_array_foreach(json_object_get(col, "Members"), i, m) {
		const char *path = str(m, "@odata.id");
		json_t *sys;

		ret = ctl_expect(c, "GET", path, NULL, 200, &sys);
		if (ret < 0)
			break;
		json_array_append_new(all, sys);
	}
	json_decref(col);
	if (ret < 0)
		goto out;
	if (o->json) {
		print_json(all);
		goto out;
	}
	if (!json_array_size(all)) {
		puts("no VMs");
		goto out;
	}
	printf("%-20s %-7s %4s %8s %5s  %s\n", "ID", "POWER", "CPUS",
	       "MEMORY", "DISKS", "NAME");
	json_array_foreach(all, i, m) {
		printf("%-20s %-7s %4lld %6.0fMi %5zu  %s\n", str(m, "Id"),
		       str(m, "PowerState"),
		       json_integer_value(json_object_get(json_object_get(
			       m, "ProcessorSummary"), "Count")),
		       mem_mib(m),
		       json_array_size(json_object_get(details(m), "Disks")),
		       str(m, "Name"));
	}
out:
	json_decref(all);
	return ret;
}

static void print_system(json_t *sys)
{
	json_t *d = details(sys), *v;
	size_t i;

	printf("Id:          %s\n", str(sys, "Id"));
	printf("Name:        %s\n", str(sys, "Name"));
	printf("Power:       %s\n", str(sys, "PowerState"));
	printf("Health:      %s\n", str(json_object_get(sys, "Status"),
					"Health"));
	printf("CPUs:        %lld\n", json_integer_value(json_object_get(
		json_object_get(sys, "ProcessorSummary"), "Count")));
	printf("Memory:      %.0f MiB\n", mem_mib(sys));
	printf("Provider:    %s\n", str(d, "Provider"));
	if (json_object_get(d, "Package"))
		printf("Package:     %s\n", str(d, "Package"));
	if (json_object_get(d, "OperatingSystem"))
		printf("OS:          %s\n", str(d, "OperatingSystem"));
	json_array_foreach(json_object_get(d, "Disks"), i, v)
		printf("Disk %zu:      %s\n", i, json_string_value(v));
	if (json_object_get(d, "ConsoleSocket"))
		printf("Console:     %s\n", str(d, "ConsoleSocket"));
	if (*str(d, "LastEvent"))
		printf("Last event:  %s\n", str(d, "LastEvent"));
}

static int cmd_show(struct ctl_client *c, const struct opts *o,
		    const char *id)
{
	json_t *sys;
	int ret = get_system(c, id, &sys);

	if (ret < 0)
		return ret;
	if (o->json)
		print_json(sys);
	else
		print_system(sys);
	json_decref(sys);
	return 0;
}

/* A local path made absolute, since ovkd resolves paths in its own
   folder; a path that does not exist here is sent as given (it may be on
   ovkd's host). */
static const char *abs_path(const char *p, char *buf, bool parent)
{
	char tmp[PATH_MAX], dir[PATH_MAX];

	if (*p == '/')
		return p;
	if (!parent)
		return realpath(p, buf) ? buf : p;
	snprintf(tmp, sizeof(tmp), "%s", p);
	if (!realpath(dirname(tmp), dir))
		return p;
	snprintf(tmp, sizeof(tmp), "%s", p);
	if (snprintf(buf, PATH_MAX, "%s/%s%s", dir, basename(tmp),
		     p[strlen(p) - 1] == '/' ? "/" : "") >= PATH_MAX)
		return p;
	return buf;
}

static int cmd_deploy(struct ctl_client *c, const struct opts *o,
		      const char *package)
{
	char full[PATH_MAX];
	json_t *req, *sys, *ovk;
	int ret;

	ovk = json_pack("{s:s, s:b, s:b}", "Package",
			abs_path(package, full, false), "Start", o->start,
			"AllowUnverified", o->allow_unverified);
	req = json_pack("{s:o}", "Oem", json_pack("{s:o}", "Ovk", ovk));
	if (o->name)
		json_object_set_new(req, "Name", json_string(o->name));
	ret = ctl_expect(c, "POST", "/redfish/v1/Systems", req, 201, &sys);
	json_decref(req);
	if (ret < 0)
		return ret;
	if (o->json)
		print_json(sys);
	else
		printf("deployed %s as %s (%s)\n", package, str(sys, "Id"),
		       str(sys, "PowerState"));
	/* ovkd keeps a VM whose start failed, and says why in LastEvent */
	if (o->start && !strcmp(str(sys, "PowerState"), "Off")) {
		fprintf(stderr, "ovkctl: %s was deployed but did not start: "
			"%s\n", str(sys, "Id"), str(details(sys), "LastEvent"));
		ret = -EIO;
	}
	json_decref(sys);
	return ret;
}

static const struct {
	const char *cmd, *reset, *done;
} power_cmds[] = {
	{ "start", "On", "powered on" },
	{ "stop", "GracefulShutdown", "asked to power off" },
	{ "force-off", "ForceOff", "powered off" },
	{ "restart", "ForceRestart", "restarted" },
	{ "pause", "Pause", "paused" },
	{ "resume", "Resume", "resumed" },
};

static int cmd_power(struct ctl_client *c, const struct opts *o, int k,
		     const char *id)
{
	char path[700];
	json_t *req, *reply, *sys;
	int ret;

	snprintf(path, sizeof(path),
		 "/redfish/v1/Systems/%s/Actions/ComputerSystem.Reset", id);
	req = json_pack("{s:s}", "ResetType", power_cmds[k].reset);
	ret = ctl_expect(c, "POST", path, req, 204, &reply);
	json_decref(req);
	json_decref(reply);
	if (ret < 0)
		return ret;
	ret = get_system(c, id, &sys);
	if (ret < 0)
		return ret;
	if (o->json)
		print_json(sys);
	else
		printf("%s: %s (power %s)\n", id, power_cmds[k].done,
		       str(sys, "PowerState"));
	json_decref(sys);
	return 0;
}

static int cmd_delete(struct ctl_client *c, const struct opts *o,
		      const char *id)
{
	char path[600];
	json_t *reply;
	int ret;

	snprintf(path, sizeof(path), "/redfish/v1/Systems/%s", id);
	ret = ctl_expect(c, "DELETE", path, NULL, 204, &reply);
	json_decref(reply);
	if (ret < 0)
		return ret;
	if (o->json)
		printf("{\"Id\": \"%s\", \"Deleted\": true}\n", id);
	else
		printf("deleted %s\n", id);
	return 0;
}

static int cmd_export(struct ctl_client *c, const struct opts *o,
		      const char *id, const char *out)
{
	char path[700], full[PATH_MAX];
	json_t *req, *reply, *summary;
	const char *where = abs_path(out, full, true);
	int ret;

	snprintf(path, sizeof(path), "/redfish/v1/Systems/%s/Actions/Oem/"
		 "OvkComputerSystem.Export", id);
	req = json_pack("{s:s}", "Path", where);
	ret = ctl_expect(c, "POST", path, req, 204, &reply);
	json_decref(req);
	json_decref(reply);
	if (ret < 0)
		return ret;
	if (o->json) {
		summary = json_pack("{s:s, s:s}", "Id", id, "Path", where);
		print_json(summary);
		json_decref(summary);
	} else {
		printf("exported %s to %s\n", id, where);
	}
	return 0;
}

/* Follow the task ovkd answered an action with until it ends, drawing
   its PercentComplete on stderr; the last Task document in *done. 0 when
   it Completed. */
static int follow_task(struct ctl_client *c, json_t *task, const char *what,
		       json_t **done)
{
	char path[200];
	bool tty = isatty(2);
	int last = -1, ret = 0;
	json_t *t = json_incref(task), *m;
	size_t i;

	snprintf(path, sizeof(path), "%s", str(task, "@odata.id"));
	for (;;) {
		const char *state = str(t, "TaskState");
		int pct = (int)json_integer_value(json_object_get(
			t, "PercentComplete"));

		if (pct != last) {
			fprintf(stderr, tty ? "\r%s: %3d%%" : "%s: %d%%\n",
				what, pct);
			last = pct;
		}
		if (strcmp(state, "New") && strcmp(state, "Running") &&
		    strcmp(state, "Pending") && strcmp(state, "Starting"))
			break;
		nanosleep(&(struct timespec){ .tv_nsec = 200000000 }, NULL);
		json_decref(t);
		t = NULL;
		ret = ctl_expect(c, "GET", path, NULL, 200, &t);
		if (ret < 0)
			return ret;
	}
	if (tty)
		fputc('\n', stderr);
	if (strcmp(str(t, "TaskState"), "Completed")) {
		fprintf(stderr, "ovkctl: %s: task %s ended %s\n", what,
			str(t, "Id"), str(t, "TaskState"));
		json_array_foreach(json_object_get(t, "Messages"), i, m)
			if (strcmp(str(m, "MessageSeverity"), "OK"))
				fprintf(stderr, "ovkctl: %s\n",
					str(m, "Message"));
		ret = -EIO;
	}
	*done = t;
	return ret;
}

/* POST an OEM action that answers with a task, and follow it. */
static int run_task_action(struct ctl_client *c, const char *id,
			   const char *action, json_t *req, const char *what,
			   json_t **done)
{
	char path[700];
	json_t *task;
	int ret;

	snprintf(path, sizeof(path), "/redfish/v1/Systems/%s/Actions/Oem/"
		 "OvkComputerSystem.%s", id, action);
	ret = ctl_expect(c, "POST", path, req, 202, &task);
	if (ret < 0)
		return ret;
	ret = follow_task(c, task, what, done);
	json_decref(task);
	return ret;
}

static json_t *task_result(json_t *t)
{
	return json_object_get(json_object_get(json_object_get(t, "Oem"),
					       "Ovk"), "Result");
}

static int cmd_snapshot(struct ctl_client *c, const struct opts *o,
			const char *id, const char *name)
{
	json_t *req = name ? json_pack("{s:s}", "Name", name) : json_object();
	json_t *done = NULL, *d, *cp;
	char what[300];
	size_t i, k;
	int ret;

	snprintf(what, sizeof(what), "snapshot of %s", id);
	ret = run_task_action(c, id, "Checkpoint", req, what, &done);
	json_decref(req);
	if (ret == 0 && o->json) {
		print_json(done);
	} else if (ret == 0) {
		json_t *r = task_result(done);

		printf("%s: checkpoint %s taken\n", id, str(r, "Checkpoint"));
		json_array_foreach(json_object_get(r, "Disks"), i, d) {
			printf("disk %lld (%s): checkpoints",
			       json_integer_value(json_object_get(d, "disk")),
			       str(d, "image"));
			json_array_foreach(json_object_get(d, "checkpoints"),
					   k, cp)
				printf(" %s", json_string_value(cp));
			putchar('\n');
		}
	}
	json_decref(done);
	return ret;
}

static int cmd_backup(struct ctl_client *c, const struct opts *o,
		      const char *id, const char *dir)
{
	char full[PATH_MAX], what[300];
	const char *where = abs_path(dir, full, true);
	json_t *req, *done = NULL, *b;
	size_t i;
	int ret;

	req = json_pack("{s:s}", "TargetDirectory", where);
	if (o->backup_type)
		json_object_set_new(req, "BackupType",
				    json_string(o->backup_type));
	snprintf(what, sizeof(what), "backup of %s", id);
	ret = run_task_action(c, id, "Backup", req, what, &done);
	json_decref(req);
	if (ret == 0 && o->json) {
		print_json(done);
	} else if (ret == 0) {
		json_array_foreach(json_object_get(task_result(done),
						   "Backups"), i, b)
			printf("%s disk %lld: %s backup %s in %s (%lld bytes, "
			       "%lld bytes of the disk read), disk sha256 "
			       "%s\n", id,
			       json_integer_value(json_object_get(b, "disk")),
			       str(b, "kind"), str(b, "checkpoint"),
			       str(b, "directory"),
			       json_integer_value(json_object_get(
				       b, "file_size")),
			       json_integer_value(json_object_get(
				       b, "read_bytes")),
			       str(b, "disk_sha256"));
	}
	json_decref(done);
	return ret;
}

/* A byte count from the JSON (a number, maybe not an integer) for people. */
static void human_bytes(double b, char *out, size_t len)
{
	human_size_1dp(b > 0 ? (uint64_t)b : 0, out, len);
}

static int cmd_stats(struct ctl_client *c, const struct opts *o,
		     const char *id)
{
	char path[700], a[32], b[32];
	json_t *sys, *st = NULL, *d, *dev, *disks = json_array(), *summary;
	size_t i;
	int ret;

	ret = get_system(c, id, &sys);
	if (ret < 0)
		goto out;
	snprintf(path, sizeof(path), "/redfish/v1/Systems/%s/SimpleStorage/1",
		 id);
	ret = ctl_expect(c, "GET", path, NULL, 200, &st);
	if (ret < 0)
		goto out;
	d = details(sys);
	json_array_foreach(json_object_get(st, "Devices"), i, dev) {
		json_t *x = json_pack("{s:s, s:I, s:s}", "Name",
				      str(dev, "Name"), "CapacityBytes",
				      json_integer_value(json_object_get(
					      dev, "CapacityBytes")),
				      "State", str(json_object_get(dev,
							"Status"), "State"));
		json_t *io = json_object_get(json_object_get(json_object_get(
			dev, "Oem"), "Ovk"), "IO");

		if (io)
			json_object_set(x, "IO", io);
		json_array_append_new(disks, x);
	}
	summary = json_pack("{s:s, s:s, s:O, s:O, s:O, s:O}", "Id", id,
			    "PowerState", str(sys, "PowerState"),
			    "CPUSeconds", json_object_get(d, "CPUSeconds"),
			    "VMMResidentBytes",
			    json_object_get(d, "VMMResidentBytes"),
			    "DiskServersRunning",
			    json_object_get(d, "DiskServersRunning"),
			    "Disks", disks);
	if (!summary) {
		fprintf(stderr, "ovkctl: stats of %s: ovkd's reply lacks "
			"Oem.Ovk.Details (CPUSeconds, VMMResidentBytes, "
			"DiskServersRunning)\n", id);
		ret = -EIO;
		goto out;
	}
	if (o->json) {
		print_json(summary);
		json_decref(summary);
		goto out;
	}
	human_bytes(json_number_value(json_object_get(d, "VMMResidentBytes")),
		    a, sizeof(a));
	printf("%s: power %s, CPU %.2f s, VMM resident %s, disk servers "
	       "running %lld\n", id, str(sys, "PowerState"),
	       json_number_value(json_object_get(d, "CPUSeconds")), a,
	       json_integer_value(json_object_get(d, "DiskServersRunning")));
	printf("%-4s %-10s %-8s %10s %10s %10s %6s  %s\n", "DISK", "SIZE",
	       "STATE", "REQUESTS", "READ", "WRITTEN", "ERRORS", "IMAGE");
	json_array_foreach(disks, i, dev) {
		json_t *io = json_object_get(dev, "IO");

		human_bytes((double)json_integer_value(json_object_get(
			dev, "CapacityBytes")), a, sizeof(a));
		printf("%-4zu %-10s %-8s ", i, a, str(dev, "State"));
		if (io) {
			human_bytes((double)json_integer_value(json_object_get(
				io, "read_bytes")), b, sizeof(b));
			printf("%10lld %10s ", json_integer_value(
				json_object_get(io, "requests")), b);
			human_bytes((double)json_integer_value(json_object_get(
				io, "written_bytes")), b, sizeof(b));
			printf("%10s %6lld  ", b, json_integer_value(
				json_object_get(io, "errors")));
		} else {
			printf("%10s %10s %10s %6s  ", "-", "-", "-", "-");
		}
		printf("%s\n", str(dev, "Name"));
	}
	json_decref(summary);
out:
	json_decref(disks);
	json_decref(st);
	json_decref(sys);
	return ret;
}

static int cmd_console(struct ctl_client *c, const char *id)
{
	json_t *sys;
	char sock[PATH_MAX];
	int ret = get_system(c, id, &sys);

	if (ret < 0)
		return ret;
	if (!json_object_get(details(sys), "ConsoleSocket")) {
		fprintf(stderr, "ovkctl: console of %s: the VM is %s; there "
			"is a console only while it runs\n", id,
			str(sys, "PowerState"));
		json_decref(sys);
		return -ENOTCONN;
	}
	snprintf(sock, sizeof(sock), "%s", str(details(sys), "ConsoleSocket"));
	json_decref(sys);
	return ctl_console(id, sock);
}

/* The credentials: --password-file (a password, or USER:PASSWORD), else
   the state folder's credentials file, which ovkd made. */
static int load_credentials(struct ctl_client *c, const char *user,
			    const char *pw_file, const char *state,
			    char *from, size_t fromlen)
{
	char line[400];
	FILE *f;

	if (pw_file)
		snprintf(from, fromlen, "%s", pw_file);
	else
		snprintf(from, fromlen, "%s/credentials", state);
	f = fopen(from, "re");
	if (!f || !fgets(line, sizeof(line), f)) {
		fprintf(stderr, "ovkctl: %s: cannot read the credentials: %s%s\n",
			from, f ? "the file is empty" : strerror(errno),
			pw_file ? "" : " (give --password-file)");
		if (f)
			fclose(f);
		return -EACCES;
	}
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	char *colon = strchr(line, ':');

	/* "USER:PASSWORD", unless --user names someone else: then the line
	   is the password, colons and all */
	if (colon && (!user || ((size_t)(colon - line) == strlen(user) &&
				!strncmp(line, user, strlen(user))))) {
		*colon = '\0';
		if (snprintf(c->user, sizeof(c->user), "%s", line) >=
			    (int)sizeof(c->user) ||
		    snprintf(c->pass, sizeof(c->pass), "%s", colon + 1) >=
			    (int)sizeof(c->pass))
			goto err_long;
	} else if (snprintf(c->pass, sizeof(c->pass), "%s", line) >=
		   (int)sizeof(c->pass)) {
		goto err_long;
	}
	if (user && snprintf(c->user, sizeof(c->user), "%s", user) >=
		    (int)sizeof(c->user))
		goto err_long;
	if (!c->user[0])
		snprintf(c->user, sizeof(c->user), "admin");
	c->cred_from = from;
	return 0;

err_long:
	fprintf(stderr, "ovkctl: %s: the user or password is too long (at "
		"most %zu and %zu bytes)\n", from, sizeof(c->user) - 1,
		sizeof(c->pass) - 1);
	return -ENAMETOOLONG;
}

/* The power_cmds entry of cmd, or -1. */
static int power_index(const char *cmd)
{
	for (unsigned k = 0; k < sizeof(power_cmds) / sizeof(power_cmds[0]);
	     k++)
		if (!strcmp(cmd, power_cmds[k].cmd))
			return (int)k;
	return -1;
}

static bool known_command(const char *cmd)
{
	static const char *const other[] = { "list", "show", "deploy",
		"delete", "export", "stats", "console", "snapshot", "backup" };

	for (unsigned k = 0; k < sizeof(other) / sizeof(other[0]); k++)
		if (!strcmp(cmd, other[k]))
			return true;
	return power_index(cmd) >= 0;
}

enum { OPT_STATE = 256, OPT_SOCKET, OPT_URL, OPT_CACERT, OPT_USER,
       OPT_PWFILE, OPT_OUTPUT, OPT_NAME, OPT_START, OPT_UNVERIFIED,
       OPT_FULL, OPT_INCREMENTAL };

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "state", required_argument, NULL, OPT_STATE },
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "url", required_argument, NULL, OPT_URL },
		{ "cacert", required_argument, NULL, OPT_CACERT },
		{ "user", required_argument, NULL, OPT_USER },
		{ "password-file", required_argument, NULL, OPT_PWFILE },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "start", no_argument, NULL, OPT_START },
		{ "allow-unverified", no_argument, NULL, OPT_UNVERIFIED },
		{ "full", no_argument, NULL, OPT_FULL },
		{ "incremental", no_argument, NULL, OPT_INCREMENTAL },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct ctl_client c = { 0 };
	struct opts o = { 0 };
	const char *state = "/var/lib/ovkd", *user = NULL, *pw_file = NULL;
	char sock[PATH_MAX], from[PATH_MAX];
	const char *cmd;
	unsigned nargs, want = 1;
	int opt, ret = -EINVAL;

	while ((opt = getopt_long(argc, argv, "hV", lopts, NULL)) != -1) {
		switch (opt) {
		case OPT_STATE: state = optarg; break;
		case OPT_SOCKET: c.socket = optarg; break;
		case OPT_URL: c.url = optarg; break;
		case OPT_CACERT: c.cacert = optarg; break;
		case OPT_USER: user = optarg; break;
		case OPT_PWFILE: pw_file = optarg; break;
		case OPT_OUTPUT:
			if (strcmp(optarg, "json"))
				return usage_error("--output %s: only json "
						   "is known", optarg);
			o.json = true;
			break;
		case OPT_NAME: o.name = optarg; break;
		case OPT_START: o.start = true; break;
		case OPT_UNVERIFIED: o.allow_unverified = true; break;
		case OPT_FULL: o.backup_type = "Full"; break;
		case OPT_INCREMENTAL: o.backup_type = "Incremental"; break;
		case 'h': fputs(usage_text, stdout); return 0;
		case 'V': printf("ovkctl (ovk) %s\n", OVK_VERSION); return 0;
		default:
			fputs("Try 'ovkctl --help'.\n", stderr);
			return 2;
		}
	}
	if (optind >= argc)
		return usage_error("%s", "a command is needed (list, show, "
				   "deploy, start, stop, ...)");
	cmd = argv[optind];
	if (!known_command(cmd))
		return usage_error("%s: no such command", cmd);
	nargs = (unsigned)(argc - optind - 1);
	if (!strcmp(cmd, "list"))
		want = 0;
	else if (!strcmp(cmd, "export") || !strcmp(cmd, "backup"))
		want = 2;
	else if (!strcmp(cmd, "snapshot") && nargs == 2)
		want = 2; /* the NAME is optional */
	if (nargs != want) {
		fprintf(stderr, "ovkctl: %s takes %u argument%s, not %u\n", cmd,
			want, want == 1 ? "" : "s", nargs);
		fputs("Try 'ovkctl --help'.\n", stderr);
		return 2;
	}
	if ((o.name || o.start || o.allow_unverified) && strcmp(cmd, "deploy"))
		return usage_error("--name, --start and --allow-unverified "
				   "are for deploy, not %s", cmd);
	if (o.backup_type && strcmp(cmd, "backup"))
		return usage_error("--full and --incremental are for backup, "
				   "not %s", cmd);
	if (want && strcmp(cmd, "deploy") && !id_ok(argv[optind + 1]))
		return usage_error("%s: not a VM id", argv[optind + 1]);
	if (c.url && c.socket)
		return usage_error("%s", "--url and --socket: give one");
	if (c.url && strncmp(c.url, "https://", 8) &&
	    strncmp(c.url, "http://127.", 11))
		return usage_error("--url %s: expected https://HOST:PORT "
				   "(plain http only to loopback)", c.url);
	if (!c.url && !c.socket) {
		snprintf(sock, sizeof(sock), "%s/ovkd.sock", state);
		c.socket = sock;
	}
	if (c.url && c.url[strlen(c.url) - 1] == '/') {
		static char trimmed[PATH_MAX];

		snprintf(trimmed, sizeof(trimmed), "%.*s",
			 (int)strlen(c.url) - 1, c.url);
		c.url = trimmed;
	}
	if (load_credentials(&c, user, pw_file, state, from, sizeof(from)) < 0)
		return 1;
	if (ctl_open(&c) < 0)
		return 1;

	const char *arg = nargs ? argv[optind + 1] : NULL;

	if (!strcmp(cmd, "list"))
		ret = cmd_list(&c, &o);
	else if (!strcmp(cmd, "show"))
		ret = cmd_show(&c, &o, arg);
	else if (!strcmp(cmd, "deploy"))
		ret = cmd_deploy(&c, &o, arg);
	else if (!strcmp(cmd, "delete"))
		ret = cmd_delete(&c, &o, arg);
	else if (!strcmp(cmd, "export"))
		ret = cmd_export(&c, &o, arg, argv[optind + 2]);
	else if (!strcmp(cmd, "stats"))
		ret = cmd_stats(&c, &o, arg);
	else if (!strcmp(cmd, "console"))
		ret = cmd_console(&c, arg);
	else if (!strcmp(cmd, "snapshot"))
		ret = cmd_snapshot(&c, &o, arg, nargs == 2 ? argv[optind + 2]
							  : NULL);
	else if (!strcmp(cmd, "backup"))
		ret = cmd_backup(&c, &o, arg, argv[optind + 2]);
	else
		ret = cmd_power(&c, &o, power_index(cmd), arg);
	ctl_close(&c);
	explicit_bzero(c.pass, sizeof(c.pass));
	return ret < 0 ? 1 : 0;
}
