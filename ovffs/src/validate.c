/* SPDX-License-Identifier: Apache-2.0 */
/* validate.c - every check `ovf validate` makes: mandatory elements, that
 * references resolve, file sizes, manifest digests and the signature. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ovf_i.h"

/* Copies the findings of src into out. */
static void copy_findings(struct ovf_finding_list *out,
			  const struct ovf_finding_list *src)
{
	for (size_t i = 0; src && i < src->n; i++)
		ovf_finding_add(out, src->v[i].sev, src->v[i].where, "%s",
				src->v[i].what);
}

/* The disk id a HostResource names ("ovf:/disk/ID"), or NULL. */
static const char *host_disk(const char *hr, bool *is_file)
{
	static const char *const disk_pfx[] = { "ovf:/disk/", "ovf://disk/", "/disk/" };
	static const char *const file_pfx[] = { "ovf:/file/", "ovf://file/", "/file/" };

	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(disk_pfx[i]);

		if (!strncmp(hr, disk_pfx[i], n)) {
			*is_file = false;
			return hr + n;
		}
		n = strlen(file_pfx[i]);
		if (!strncmp(hr, file_pfx[i], n)) {
			*is_file = true;
			return hr + n;
		}
	}
	return NULL;
}

/* Checks one system's hardware items (and its children). */
static void check_system(const struct ovf_envelope *env,
			 const struct ovf_system *s, const char *parent,
			 struct ovf_finding_list *out)
{
	char where[512];

	snprintf(where, sizeof(where), "%s%s%s[%s]", parent, *parent ? "/" : "",
		 s->collection ? "VirtualSystemCollection" : "VirtualSystem",
		 s->id ? s->id : "?");
	for (size_t i = 0; i < s->nitems; i++) {
		const struct ovf_item *it = &s->items[i];
		char loc[700];

		snprintf(loc, sizeof(loc), "%s/VirtualHardwareSection/%s[InstanceID=%s]",
			 where, it->element, it->instance_id ? it->instance_id : "?");
		for (size_t j = 0; j < i && it->instance_id; j++)
			if (s->items[j].instance_id &&
			    !strcmp(s->items[j].instance_id, it->instance_id) &&
			    !s->items[j].config_name && !it->config_name)
				ovf_finding_add(out, OVF_SEV_ERROR, loc,
						"InstanceID %s is used by another item too",
						it->instance_id);
		if (it->host_resource) {
			bool is_file = false;
			const char *id = host_disk(it->host_resource, &is_file);

			if (id && !is_file && !ovf_find_disk(env, id))
				ovf_finding_add(out, OVF_SEV_ERROR, loc,
						"rasd:HostResource \"%s\" names no Disk in DiskSection",
						it->host_resource);
			else if (id && is_file && !ovf_find_file(env, id))
				ovf_finding_add(out, OVF_SEV_ERROR, loc,
						"rasd:HostResource \"%s\" names no File in References",
						it->host_resource);
			else if (!id && (it->resource_type == OVF_RT_DISK))
				ovf_finding_add(out, OVF_SEV_ERROR, loc,
						"rasd:HostResource \"%s\" is not ovf:/disk/<id> or ovf:/file/<id>",
						it->host_resource);
		}
		if (it->parent) {
			bool found = false;

			for (size_t j = 0; j < s->nitems && !found; j++)
				found = s->items[j].instance_id &&
					!strcmp(s->items[j].instance_id, it->parent);
			if (!found)
				ovf_finding_add(out, OVF_SEV_ERROR, loc,
						"rasd:Parent %s is the InstanceID of no item",
						it->parent);
		}
		if (it->resource_type == OVF_RT_ETHERNET && it->connection) {
			bool found = false;

			for (size_t j = 0; j < env->nnetworks && !found; j++)
				found = env->networks[j].name &&
					!strcmp(env->networks[j].name, it->connection);
			if (!found)
				ovf_finding_add(out, OVF_SEV_ERROR, loc,
						"rasd:Connection \"%s\" names no Network in NetworkSection",
						it->connection);
		}
	}
	for (size_t i = 0; i < s->nchildren; i++)
		check_system(env, &s->children[i], where, out);
	if (s->collection && !s->nchildren)
		ovf_finding_add(out, OVF_SEV_WARN, where,
				"VirtualSystemCollection holds no VirtualSystem");
}

/* Checks References, DiskSection and that files exist with their sizes. */
static void check_files(struct ovf_pkg *p, struct ovf_finding_list *out)
{
	const struct ovf_envelope *env = p->env;

	for (size_t i = 0; i < env->nfiles; i++) {
		const struct ovf_file *f = &env->files[i];
		char where[300], **parts;
		size_t np;
		uint64_t total = 0;

		snprintf(where, sizeof(where), "References/File[@id=%s]",
			 f->id ? f->id : "?");
		for (size_t j = 0; j < i && f->id; j++)
			if (env->files[j].id && !strcmp(env->files[j].id, f->id))
				ovf_finding_add(out, OVF_SEV_ERROR, where,
						"ovf:id %s is used by another File", f->id);
		if (!f->href)
			continue;
		if (ovf_pkg_file_parts(p, f, &parts, &np) < 0) {
			ovf_finding_add(out, OVF_SEV_ERROR, where, "%s", ovf_errmsg());
			continue;
		}
		if (!np) {
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"file %s is not in the package%s%s", f->href,
					f->chunk_size ? " (nor its chunks)" : "",
					p->ova ? "" : " (a package's files are regular files in its folder, never reached through symlinks)");
			ovf_strv_free(parts, np);
			continue;
		}
		for (size_t j = 0; j < np; j++) {
			const struct ovf_member *m = ovf_pkg_find_member(p, parts[j]);

			if (!m) {
				ovf_finding_add(out, OVF_SEV_ERROR, where,
						"file %s is not in the package", parts[j]);
				continue;
			}
			total += m->size;
			if (f->chunk_size && np > 1 && j + 1 < np &&
			    m->size != f->chunk_size)
				ovf_finding_add(out, OVF_SEV_ERROR, where,
						"chunk %s is %llu bytes, ovf:chunkSize says %llu",
						parts[j], (unsigned long long)m->size,
						(unsigned long long)f->chunk_size);
		}
		if (f->has_size && total != f->size)
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"ovf:size is %llu but %s%s holds %llu bytes",
					(unsigned long long)f->size, f->href,
					np > 1 ? " (all chunks)" : "",
					(unsigned long long)total);
		ovf_strv_free(parts, np);
	}
	for (size_t i = 0; i < env->ndisks; i++) {
		const struct ovf_disk *d = &env->disks[i];
		char where[300];

		snprintf(where, sizeof(where), "DiskSection/Disk[@diskId=%s]",
			 d->disk_id ? d->disk_id : "?");
		for (size_t j = 0; j < i && d->disk_id; j++)
			if (env->disks[j].disk_id &&
			    !strcmp(env->disks[j].disk_id, d->disk_id))
				ovf_finding_add(out, OVF_SEV_ERROR, where,
						"ovf:diskId %s is used by another Disk", d->disk_id);
		if (d->file_ref && !ovf_find_file(env, d->file_ref))
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"ovf:fileRef \"%s\" names no File in References",
					d->file_ref);
		if (d->parent_ref && !ovf_find_disk(env, d->parent_ref))
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"ovf:parentRef \"%s\" names no Disk", d->parent_ref);
		if (d->file_ref && !d->format)
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"ovf:format is missing (mandatory when ovf:fileRef is given)");
	}
	/* members nobody references */
	for (size_t i = 0; i < p->nmembers; i++) {
		const char *m = p->members[i].name;
		bool used = !strcmp(m, p->descriptor) ||
			    (p->manifest && !strcmp(m, p->manifest)) ||
			    (p->cert && !strcmp(m, p->cert));

		for (size_t f = 0; f < env->nfiles && !used; f++) {
			const char *h = env->files[f].href;
			size_t hl = h ? strlen(h) : 0;

			used = h && (!strcmp(m, h) ||
				     (env->files[f].chunk_size && !strncmp(m, h, hl) &&
				      m[hl] == '.' && strlen(m + hl + 1) == 9 &&
				      strspn(m + hl + 1, "0123456789") == 9));
		}
		if (!used && p->ova)
			ovf_finding_add(out, OVF_SEV_WARN, m,
					"member is not referenced by the descriptor");
	}
}

/* Adds the manifest and certificate results. */
static int check_digests(struct ovf_pkg *p, struct ovf_finding_list *out)
{
	struct ovf_verify v;
	int r = ovf_verify(p, &v);

	if (r < 0) {
		ovf_finding_add(out, OVF_SEV_ERROR, p->manifest ? p->manifest : p->path,
				"cannot check: %s", ovf_errmsg());
		return 0;
	}
	if (!v.has_manifest)
		ovf_finding_add(out, OVF_SEV_WARN, p->path,
				"no manifest (.mf): file contents are not checked");
	for (size_t i = 0; i < v.nentries; i++) {
		const struct ovf_digest_entry *e = &v.entries[i];
		char where[600];

		snprintf(where, sizeof(where), "%s:%s", p->manifest, e->name);
		switch (e->status) {
		case OVF_DIGEST_OK:
			break;
		case OVF_DIGEST_MISMATCH:
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"%s digest mismatch: manifest says %s, file has %s",
					e->algo, e->expected, e->actual);
			break;
		case OVF_DIGEST_MISSING:
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"listed in the manifest but not in the package");
			break;
		case OVF_DIGEST_UNLISTED:
			ovf_finding_add(out, OVF_SEV_ERROR, where,
					"in the package but not in the manifest");
			break;
		case OVF_DIGEST_UNREADABLE:
			ovf_finding_add(out, OVF_SEV_ERROR, where, "%s",
					e->actual ? e->actual : "cannot check");
			break;
		}
	}
	if (v.sig == OVF_SIG_BAD || v.sig == OVF_SIG_ERROR)
		ovf_finding_add(out, OVF_SEV_ERROR, p->cert, "%s",
				v.sig_message ? v.sig_message : "signature not verified");
	if (v.sig == OVF_SIG_OK && !v.cert_time_valid)
		ovf_finding_add(out, OVF_SEV_WARN, p->cert,
				"certificate not valid now (notBefore %s, notAfter %s)",
				v.cert_not_before, v.cert_not_after);
	ovf_verify_free(&v);
	return 0;
}

/* Appends every problem found in the package; returns the error count. */
int ovf_validate(struct ovf_pkg *p, struct ovf_finding_list *out)
{
	ovf_err_clear();
	copy_findings(out, p->env->parse_findings);
	copy_findings(out, &p->warnings);
	check_files(p, out);
	ovf_check_disk_contents(p, out);
	if (p->env->content)
		check_system(p->env, p->env->content, "", out);
	check_digests(p, out);
	return (int)ovf_findings_errors(out);
}
