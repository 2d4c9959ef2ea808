/* SPDX-License-Identifier: Apache-2.0 */
/* descriptor.c - parse an OVF descriptor (0.9, 1.x, 2.x) with libxml2,
 * hostile-safe, into the read-only model of ovf.h. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "ovf_i.h"

#define OVF_DESCRIPTOR_MAX (32u << 20)

#define NS_OVF09 "http://www.vmware.com/schema/ovf/1/envelope"
#define NS_OVF1 "http://schemas.dmtf.org/ovf/envelope/1"
#define NS_OVF2 "http://schemas.dmtf.org/ovf/envelope/2"
#define NS_XSI "http://www.w3.org/2001/XMLSchema-instance"

/* State of one parse: where findings go, the envelope namespace. */
struct parse {
	const char *name;
	const xmlChar *ns;
	struct ovf_finding_list *findings;
	struct ovf_envelope *env;
};

/* ---- libxml2 helpers ---------------------------------------------------- */

/* True when n is an element with this local name. */
static bool is_el(const xmlNode *n, const char *local)
{
	return n && n->type == XML_ELEMENT_NODE &&
	       !strcmp((const char *)n->name, local);
}

/* A malloc'd copy of an xmlChar string, freeing the original. */
static char *take_xml(xmlChar *x)
{
	char *s;

	if (!x)
		return NULL;
	s = strdup((const char *)x);
	xmlFree(x);
	return s;
}

/* The attribute with this local name: in the envelope namespace first,
   then without namespace, then in any namespace. NULL if absent. */
static char *attr(const struct parse *ps, const xmlNode *n, const char *local)
{
	const xmlAttr *any = NULL, *none = NULL;

	for (const xmlAttr *a = n->properties; a; a = a->next) {
		if (strcmp((const char *)a->name, local))
			continue;
		if (a->ns && ps->ns && !xmlStrcmp(a->ns->href, ps->ns))
			return take_xml(xmlNodeGetContent((const xmlNode *)a));
		if (!a->ns)
			none = a;
		else if (!any)
			any = a;
	}
	if (none)
		return take_xml(xmlNodeGetContent((const xmlNode *)none));
	if (any)
		return take_xml(xmlNodeGetContent((const xmlNode *)any));
	return NULL;
}

/* The trimmed text content of n. */
static char *text(const xmlNode *n)
{
	char *s = take_xml(xmlNodeGetContent(n));
	size_t b = 0, e;

	if (!s)
		return NULL;
	while (s[b] && isspace((unsigned char)s[b]))
		b++;
	e = strlen(s);
	while (e > b && isspace((unsigned char)s[e - 1]))
		e--;
	memmove(s, s + b, e - b);
	s[e - b] = '\0';
	return s;
}

/* The text of the first child element with this local name. */
static char *child_text(const xmlNode *n, const char *local)
{
	for (const xmlNode *c = n->children; c; c = c->next)
		if (is_el(c, local))
			return text(c);
	return NULL;
}

/* ovf:required: true unless "false" or "0". */
static bool required_attr(const struct parse *ps, const xmlNode *n)
{
	char *v = attr(ps, n, "required");
	bool req = !(v && (!strcmp(v, "false") || !strcmp(v, "0")));

	free(v);
	return req;
}

/*
 * The section kind of n: its local name, or for OVF 0.9's generic
 * <Section xsi:type="ovf:DiskSection_Type"> the type without prefix and
 * "_Type". Malloc'd.
 */
static char *section_kind(const xmlNode *n)
{
	const char *local = (const char *)n->name;
	char *t, *colon, *suffix;

	if (strcmp(local, "Section") && strcmp(local, "Content"))
		return strdup(local);
	t = take_xml(xmlGetNsProp(n, (const xmlChar *)"type",
				  (const xmlChar *)NS_XSI));
	if (!t)
		return strdup(local);
	colon = strrchr(t, ':');
	if (colon)
		memmove(t, colon + 1, strlen(colon));
	suffix = strstr(t, "_Type");
	if (suffix && suffix[5] == '\0')
		*suffix = '\0';
	return t;
}

/* ---- Units and numbers ---------------------------------------------------- */

/* Bytes per unit for the allocation-unit spellings seen in packages. */
uint64_t ovf_units_multiplier(const char *units)
{
	char s[64];
	size_t n = 0;
	uint64_t base, exp, v = 1;
	char *p;

	if (!units)
		return 1;
	for (const char *c = units; *c; c++) {
		if (isspace((unsigned char)*c))
			continue;
		if (n + 1 >= sizeof(s))
			return 0;
		s[n++] = (char)tolower((unsigned char)*c);
	}
	s[n] = '\0';
	if (!n || !strcmp(s, "byte") || !strcmp(s, "bytes") || !strcmp(s, "b"))
		return 1;
	if (!strcmp(s, "kilobytes") || !strcmp(s, "kb") || !strcmp(s, "kib") ||
	    !strcmp(s, "kilobyte"))
		return 1ull << 10;
	if (!strcmp(s, "megabytes") || !strcmp(s, "mb") || !strcmp(s, "mib") ||
	    !strcmp(s, "megabyte"))
		return 1ull << 20;
	if (!strcmp(s, "gigabytes") || !strcmp(s, "gb") || !strcmp(s, "gib") ||
	    !strcmp(s, "gigabyte"))
		return 1ull << 30;
	if (!strcmp(s, "terabytes") || !strcmp(s, "tb") || !strcmp(s, "tib") ||
	    !strcmp(s, "terabyte"))
		return 1ull << 40;
	if (strncmp(s, "byte*", 5))
		return 0;
	p = s + 5;
	/* "byte * 2^30", "byte*1024", "byte * 10^6" */
	base = strtoull(p, &p, 10);
	if (*p == '^') {
		exp = strtoull(p + 1, &p, 10);
		if (*p || base < 2 || exp > 63)
			return 0;
		for (uint64_t i = 0; i < exp; i++) {
			if (v > UINT64_MAX / base)
				return 0;
			v *= base;
		}
		return v;
	}
	return *p || !base ? 0 : base;
}

/* ---- Model building ----------------------------------------------------------- */

/* Grows a model array by one zeroed element; NULL on out of memory. */
static void *grow(void *arrp, size_t *n, size_t elem)
{
	void **arr = arrp;
	char *v = realloc(*arr, (*n + 1) * elem);

	if (!v)
		return NULL;
	memset(v + *n * elem, 0, elem);
	*arr = v;
	return v + (*n)++ * elem;
}

#define GROW(arr, n) grow(&(arr), &(n), sizeof(*(arr)))

/* The kind name for an item's ResourceType (and subtype for type 20). */
static const char *item_kind(uint32_t rt, const char *subtype)
{
	switch (rt) {
	case OVF_RT_CPU: return "cpu";
	case OVF_RT_MEMORY: return "memory";
	case OVF_RT_IDE: return "ide";
	case OVF_RT_SCSI: return "scsi";
	case OVF_RT_ETHERNET: return "nic";
	case OVF_RT_FLOPPY: return "floppy";
	case OVF_RT_CDROM:
	case OVF_RT_DVD: return "cdrom";
	case OVF_RT_DISK: return "disk";
	case OVF_RT_SERIAL: return "serial";
	case OVF_RT_USB: return "usb";
	case OVF_RT_GRAPHICS: return "video";
	case OVF_RT_SOUND: return "sound";
	case OVF_RT_STORAGE:
		if (subtype && (strcasestr(subtype, "sata") ||
				strcasestr(subtype, "ahci")))
			return "sata";
		if (subtype && strcasestr(subtype, "nvme"))
			return "nvme";
		return "storage";
	default: return "other";
	}
}

/* Parses one hardware item. */
static int parse_item(struct parse *ps, const xmlNode *n, const char *where,
		      struct ovf_item *it)
{
	char *rt = NULL, *vq = NULL;
	char loc[1024];

	it->element = strdup((const char *)n->name);
	it->required = required_attr(ps, n);
	it->config_name = attr(ps, n, "configuration");
	for (const xmlNode *c = n->children; c; c = c->next) {
		char **slot = NULL;

		if (c->type != XML_ELEMENT_NODE)
			continue;
		if (is_el(c, "ResourceType")) slot = &rt;
		else if (is_el(c, "VirtualQuantity")) slot = &vq;
		else if (is_el(c, "InstanceID")) slot = &it->instance_id;
		else if (is_el(c, "ElementName") || is_el(c, "Caption"))
			slot = &it->element_name;
		else if (is_el(c, "Description")) slot = &it->description;
		else if (is_el(c, "ResourceSubType")) slot = &it->resource_subtype;
		else if (is_el(c, "Parent")) slot = &it->parent;
		else if (is_el(c, "Address")) slot = &it->address;
		else if (is_el(c, "AddressOnParent")) slot = &it->address_on_parent;
		else if (is_el(c, "Connection")) slot = &it->connection;
		else if (is_el(c, "HostResource")) slot = &it->host_resource;
		else if (is_el(c, "AllocationUnits")) slot = &it->allocation_units;
		else if (is_el(c, "AutomaticAllocation")) {
			char *t = text(c);

			it->automatic_allocation = t && !strcmp(t, "true");
			free(t);
		}
		if (slot && !*slot)
			*slot = text(c);
	}
	snprintf(loc, sizeof(loc), "%s/%s[InstanceID=%s]", where,
		 it->element, it->instance_id ? it->instance_id : "?");
	if (!it->instance_id)
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, loc,
				"rasd:InstanceID is missing (mandatory)");
	if (!rt) {
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, loc,
				"rasd:ResourceType is missing (mandatory)");
	} else {
		uint64_t v;

		if (!ovf_parse_u64(rt, &v) || v > UINT16_MAX)
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, loc,
					"rasd:ResourceType \"%s\" is not an unsigned 16-bit integer",
					rt);
		else {
			it->has_resource_type = true;
			it->resource_type = (uint32_t)v;
		}
	}
	it->kind = strdup(item_kind(it->resource_type, it->resource_subtype));
	if (vq) {
		if (ovf_parse_u64(vq, &it->virtual_quantity))
			it->has_quantity = true;
		else
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, loc,
					"rasd:VirtualQuantity \"%s\" is not an unsigned integer",
					vq);
	}
	if (it->resource_type == OVF_RT_MEMORY && it->has_quantity) {
		uint64_t mul = ovf_units_multiplier(it->allocation_units
					? it->allocation_units : "byte * 2^20");

		if (!mul)
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, loc,
					"rasd:AllocationUnits \"%s\" is not a unit of bytes (expected e.g. \"byte * 2^20\" or \"MegaBytes\")",
					it->allocation_units);
		else if (it->virtual_quantity > UINT64_MAX / mul)
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, loc,
					"memory size overflows 64 bits");
		else {
			it->has_bytes = true;
			it->bytes = it->virtual_quantity * mul;
		}
		if (!it->allocation_units)
			ovf_finding_add(ps->findings, OVF_SEV_WARN, loc,
					"memory item without rasd:AllocationUnits: assumed MiB");
	}
	free(rt);
	free(vq);
	if (!it->element || !it->kind)
		return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
	return 0;
}

/* Parses a VirtualHardwareSection into s (only the first one counts). */
static int parse_hardware(struct parse *ps, const xmlNode *n, const char *where,
			  struct ovf_system *s)
{
	char loc[640];
	bool have_cpu = false, have_mem = false;

	if (s->has_hardware)
		return 0;
	s->has_hardware = true;
	snprintf(loc, sizeof(loc), "%s/VirtualHardwareSection", where);
	for (const xmlNode *c = n->children; c; c = c->next) {
		struct ovf_item *it;
		int r;

		if (is_el(c, "System")) {
			free(s->hw_system_type);
			s->hw_system_type = child_text(c, "VirtualSystemType");
			continue;
		}
		if (!is_el(c, "Item") && !is_el(c, "StorageItem") &&
		    !is_el(c, "EthernetPortItem"))
			continue;
		it = GROW(s->items, s->nitems);
		if (!it)
			return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
		r = parse_item(ps, c, loc, it);
		if (r < 0)
			return r;
		/* default configuration first; otherwise the first seen */
		if (it->resource_type == OVF_RT_CPU && it->has_quantity &&
		    (!have_cpu || !it->config_name) &&
		    it->virtual_quantity <= UINT32_MAX) {
			if (!have_cpu || !it->config_name)
				s->cpus = (unsigned)it->virtual_quantity;
			have_cpu = have_cpu || !it->config_name;
		}
		if (it->resource_type == OVF_RT_MEMORY && it->has_bytes &&
		    (!have_mem || !it->config_name)) {
			s->memory_bytes = it->bytes;
			have_mem = have_mem || !it->config_name;
		}
	}
	return 0;
}

/* Parses one ProductSection Property. */
static int parse_property(struct parse *ps, const xmlNode *n,
			  struct ovf_product *p)
{
	struct ovf_property *pr = GROW(p->props, p->nprops);
	char *uc;

	if (!pr)
		return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
	pr->key = attr(ps, n, "key");
	pr->type = attr(ps, n, "type");
	pr->value = attr(ps, n, "value");
	pr->qualifiers = attr(ps, n, "qualifiers");
	uc = attr(ps, n, "userConfigurable");
	pr->user_configurable = uc && !strcmp(uc, "true");
	free(uc);
	pr->label = child_text(n, "Label");
	pr->description = child_text(n, "Description");
	if (!pr->key)
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, "ProductSection/Property",
				"ovf:key is missing (mandatory)");
	if (!pr->type)
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, pr->key ? pr->key : "ProductSection/Property",
				"ovf:type is missing on Property (mandatory)");
	return 0;
}

/* Parses a ProductSection (Property elements may sit inside Category). */
static int parse_product(struct parse *ps, const xmlNode *n,
			 struct ovf_system *s)
{
	struct ovf_product *p = GROW(s->products, s->nproducts);

	if (!p)
		return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
	p->class_id = attr(ps, n, "class");
	p->instance_id = attr(ps, n, "instance");
	p->product = child_text(n, "Product");
	p->vendor = child_text(n, "Vendor");
	p->version = child_text(n, "Version");
	p->full_version = child_text(n, "FullVersion");
	p->product_url = child_text(n, "ProductUrl");
	p->vendor_url = child_text(n, "VendorUrl");
	p->app_url = child_text(n, "AppUrl");
	for (const xmlNode *c = n->children; c; c = c->next) {
		int r = 0;

		if (is_el(c, "Property"))
			r = parse_property(ps, c, p);
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_system(struct parse *ps, const xmlNode *n,
			const char *parent, struct ovf_system *s, int depth);

/*
 * DSP0243: every section (Section_Type) and every content element
 * (VirtualSystem, VirtualSystemCollection) holds an Info element. A missing
 * one is one finding naming the element, its ovf:id when it has one and its
 * line. Sections of vendor namespaces are the vendor's schema: not checked.
 */
static void need_info(struct parse *ps, const xmlNode *n, const char *parent,
		      const char *kind)
{
	char *id;

	for (const xmlNode *c = n->children; c; c = c->next)
		if (is_el(c, "Info"))
			return;
	id = kind ? attr(ps, n, "id") : NULL;
	{
		char loc[700];

		snprintf(loc, sizeof(loc), "%s%s%s%s%s%s", parent,
			 kind ? "/" : "", kind ? kind : "", id ? "[@id=" : "",
			 id ? id : "", id ? "]" : "");
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, loc,
				"Info element is missing (mandatory in every section), line %ld",
				xmlGetLineNo(n));
	}
	free(id);
}

/* True for an element of the envelope's namespace named *Section (known or
   not; OVF 0.9's <Section xsi:type=...> arrives here as its kind). */
static bool is_ovf_section(const struct parse *ps, const xmlNode *n,
			   const char *kind)
{
	size_t l = strlen(kind);

	return n->ns && !xmlStrcmp(n->ns->href, ps->ns) && l >= 7 &&
	       !strcmp(kind + l - 7, "Section");
}

/* Records a section we do not model; a required one is an error. */
static int other_section(struct parse *ps, const xmlNode *n, const char *kind,
			 const char *where, struct ovf_other_section **v,
			 size_t *nv)
{
	struct ovf_other_section *o = grow(v, nv, sizeof(**v));

	if (!o)
		return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
	o->ns = ovf_strdup(n->ns ? (const char *)n->ns->href : NULL);
	o->name = strdup(kind);
	o->required = required_attr(ps, n);
	o->info = child_text(n, "Info");
	if (o->required && n->ns && !xmlStrcmp(n->ns->href, ps->ns))
		return 0; /* an OVF section we do not model (e.g. Install) */
	if (o->required)
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
				"section %s {%s} is not understood and not marked ovf:required=\"false\"",
				kind, o->ns ? o->ns : "");
	return 0;
}

/* Parses the sections and content of a VirtualSystem(Collection). */
static int parse_system(struct parse *ps, const xmlNode *n, const char *parent,
			struct ovf_system *s, int depth)
{
	char where[512];
	char *kind = section_kind(n);

	if (!kind)
		return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
	s->collection = !strcmp(kind, "VirtualSystemCollection");
	free(kind);
	s->id = attr(ps, n, "id");
	s->info = child_text(n, "Info");
	s->name = child_text(n, "Name");
	snprintf(where, sizeof(where), "%s%s%s[%s]", parent, *parent ? "/" : "",
		 s->collection ? "VirtualSystemCollection" : "VirtualSystem",
		 s->id ? s->id : "?");
	if (!s->id)
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
				"ovf:id is missing (mandatory)");
	need_info(ps, n, where, NULL);
	if (depth > 16)
		return ovf_err(-EINVAL, "%s: %s: VirtualSystemCollection nested more than 16 deep",
			       ps->name, where);
	for (const xmlNode *c = n->children; c; c = c->next) {
		int r = 0;

		if (c->type != XML_ELEMENT_NODE || is_el(c, "Info") ||
		    is_el(c, "Name"))
			continue;
		kind = section_kind(c);
		if (!kind)
			return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
		if (is_ovf_section(ps, c, kind))
			need_info(ps, c, where, kind);
		if (!strcmp(kind, "VirtualHardwareSection")) {
			r = parse_hardware(ps, c, where, s);
		} else if (!strcmp(kind, "ProductSection")) {
			r = parse_product(ps, c, s);
		} else if (!strcmp(kind, "EulaSection")) {
			char **e = GROW(s->eulas, s->neulas);

			if (!e)
				r = ovf_err(-ENOMEM, "%s: out of memory", ps->name);
			else
				*e = child_text(c, "License");
		} else if (!strcmp(kind, "OperatingSystemSection")) {
			char *id = attr(ps, c, "id");
			uint64_t v;

			s->has_os = true;
			if (id && ovf_parse_u64(id, &v) && v <= UINT16_MAX)
				s->os_id = (uint32_t)v;
			else
				ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
						"OperatingSystemSection ovf:id \"%s\" is not an unsigned 16-bit integer",
						id ? id : "(missing)");
			free(id);
			free(s->os_description);
			s->os_description = child_text(c, "Description");
			s->os_version = attr(ps, c, "version");
		} else if (!strcmp(kind, "AnnotationSection")) {
			free(s->annotation);
			s->annotation = child_text(c, "Annotation");
		} else if (!strcmp(kind, "VirtualSystem") ||
			   !strcmp(kind, "VirtualSystemCollection")) {
			struct ovf_system *child;

			if (!s->collection) {
				ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
						"a VirtualSystem cannot contain %s", kind);
				free(kind);
				continue;
			}
			child = GROW(s->children, s->nchildren);
			r = child ? parse_system(ps, c, where, child, depth + 1)
				  : ovf_err(-ENOMEM, "%s: out of memory", ps->name);
		} else if (!strcmp(kind, "StartupSection") ||
			   !strcmp(kind, "ResourceAllocationSection") ||
			   !strcmp(kind, "InstallSection")) {
			/* understood, nothing the model needs */
		} else {
			r = other_section(ps, c, kind, where, &s->others,
					  &s->nothers);
		}
		free(kind);
		if (r < 0)
			return r;
	}
	if (!s->collection && !s->has_hardware)
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
				"VirtualHardwareSection is missing (mandatory in a VirtualSystem)");
	return 0;
}

/* Parses References/File. */
static int parse_references(struct parse *ps, const xmlNode *n)
{
	ps->env->has_references = true;
	for (const xmlNode *c = n->children; c; c = c->next) {
		struct ovf_file *f;
		char *v;
		char where[300];

		if (!is_el(c, "File"))
			continue;
		f = GROW(ps->env->files, ps->env->nfiles);
		if (!f)
			return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
		f->id = attr(ps, c, "id");
		f->href = attr(ps, c, "href");
		f->compression = attr(ps, c, "compression");
		snprintf(where, sizeof(where), "References/File[@id=%s]",
			 f->id ? f->id : "?");
		if (!f->id)
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"ovf:id is missing (mandatory)");
		if (!f->href)
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"ovf:href is missing (mandatory)");
		v = attr(ps, c, "size");
		if (v) {
			if (ovf_parse_u64(v, &f->size))
				f->has_size = true;
			else
				ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
						"ovf:size \"%s\" is not an unsigned integer", v);
		}
		free(v);
		v = attr(ps, c, "chunkSize");
		if (v && (!ovf_parse_u64(v, &f->chunk_size) || !f->chunk_size))
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"ovf:chunkSize \"%s\" is not a positive integer", v);
		free(v);
		if (f->compression && strcmp(f->compression, "gzip") &&
		    strcmp(f->compression, "identity"))
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"ovf:compression \"%s\" is not supported (expected \"gzip\" or \"identity\")",
					f->compression);
	}
	return 0;
}

/* Parses DiskSection/Disk. */
static int parse_disks(struct parse *ps, const xmlNode *n)
{
	ps->env->has_disk_section = true;
	free(ps->env->disk_section_info);
	ps->env->disk_section_info = child_text(n, "Info");
	for (const xmlNode *c = n->children; c; c = c->next) {
		struct ovf_disk *d;
		char *v;
		char where[300];

		if (!is_el(c, "Disk"))
			continue;
		d = GROW(ps->env->disks, ps->env->ndisks);
		if (!d)
			return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
		d->disk_id = attr(ps, c, "diskId");
		d->file_ref = attr(ps, c, "fileRef");
		d->format = attr(ps, c, "format");
		d->parent_ref = attr(ps, c, "parentRef");
		d->capacity_text = attr(ps, c, "capacity");
		d->capacity_units = attr(ps, c, "capacityAllocationUnits");
		snprintf(where, sizeof(where), "DiskSection/Disk[@diskId=%s]",
			 d->disk_id ? d->disk_id : "?");
		if (!d->disk_id)
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"ovf:diskId is missing (mandatory)");
		if (!d->capacity_text)
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"ovf:capacity is missing (mandatory)");
		v = attr(ps, c, "populatedSize");
		if (v) {
			if (ovf_parse_u64(v, &d->populated_size))
				d->has_populated_size = true;
			else
				ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
						"ovf:populatedSize \"%s\" is not an unsigned integer", v);
		}
		free(v);
	}
	return 0;
}

/* Parses NetworkSection/Network. */
static int parse_networks(struct parse *ps, const xmlNode *n)
{
	ps->env->has_network_section = true;
	for (const xmlNode *c = n->children; c; c = c->next) {
		struct ovf_network *net;

		if (!is_el(c, "Network"))
			continue;
		net = GROW(ps->env->networks, ps->env->nnetworks);
		if (!net)
			return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
		net->name = attr(ps, c, "name");
		net->description = child_text(c, "Description");
		if (!net->name)
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, "NetworkSection/Network",
					"ovf:name is missing (mandatory)");
	}
	return 0;
}

/* The value of ProductSection property key anywhere in the tree. */
static const char *find_property(const struct ovf_system *s, const char *key)
{
	if (!s)
		return NULL;
	for (size_t i = 0; i < s->nproducts; i++)
		for (size_t j = 0; j < s->products[i].nprops; j++) {
			const struct ovf_property *p = &s->products[i].props[j];

			if (p->key && !strcmp(p->key, key))
				return p->value;
		}
	for (size_t i = 0; i < s->nchildren; i++) {
		const char *v = find_property(&s->children[i], key);

		if (v)
			return v;
	}
	return NULL;
}

/* Turns each Disk's capacity and units into bytes where possible. */
static void resolve_capacities(struct parse *ps)
{
	for (size_t i = 0; i < ps->env->ndisks; i++) {
		struct ovf_disk *d = &ps->env->disks[i];
		const char *t = d->capacity_text;
		char where[300], key[256];
		uint64_t v, mul;

		if (!t)
			continue;
		snprintf(where, sizeof(where), "DiskSection/Disk[@diskId=%s]",
			 d->disk_id ? d->disk_id : "?");
		if (t[0] == '$' && t[1] == '{') {
			const char *end = strchr(t, '}');
			size_t n = end ? (size_t)(end - t - 2) : 0;

			if (!end || end[1] || !n || n >= sizeof(key)) {
				ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
						"ovf:capacity \"%s\" is neither a number nor ${property}", t);
				continue;
			}
			memcpy(key, t + 2, n);
			key[n] = '\0';
			t = find_property(ps->env->content, key);
			if (!t) {
				ovf_finding_add(ps->findings, OVF_SEV_WARN, where,
						"ovf:capacity refers to property \"%s\" which has no default value",
						key);
				continue;
			}
		}
		if (!ovf_parse_u64(t, &v)) {
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"ovf:capacity \"%s\" is not an unsigned integer", t);
			continue;
		}
		mul = ovf_units_multiplier(d->capacity_units);
		if (!mul) {
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"ovf:capacityAllocationUnits \"%s\" not understood (expected e.g. \"byte * 2^30\")",
					d->capacity_units);
			continue;
		}
		if (v > UINT64_MAX / mul) {
			ovf_finding_add(ps->findings, OVF_SEV_ERROR, where,
					"capacity overflows 64 bits");
			continue;
		}
		d->capacity = v * mul;
		d->has_capacity = true;
	}
}

/* Walks the Envelope element. */
static int parse_envelope(struct parse *ps, const xmlNode *root)
{
	struct ovf_envelope *env = ps->env;

	for (const xmlNode *c = root->children; c; c = c->next) {
		char *kind;
		int r = 0;

		if (c->type != XML_ELEMENT_NODE)
			continue;
		kind = section_kind(c);
		if (!kind)
			return ovf_err(-ENOMEM, "%s: out of memory", ps->name);
		if (is_ovf_section(ps, c, kind))
			need_info(ps, c, "Envelope", kind);
		if (!strcmp(kind, "References")) {
			r = parse_references(ps, c);
		} else if (!strcmp(kind, "DiskSection")) {
			r = parse_disks(ps, c);
		} else if (!strcmp(kind, "NetworkSection")) {
			r = parse_networks(ps, c);
		} else if (!strcmp(kind, "VirtualSystem") ||
			   !strcmp(kind, "VirtualSystemCollection")) {
			if (env->content) {
				ovf_finding_add(ps->findings, OVF_SEV_ERROR, "Envelope",
						"more than one content element (%s): exactly one is allowed",
						kind);
			} else {
				env->content = calloc(1, sizeof(*env->content));
				r = env->content
				    ? parse_system(ps, c, "", env->content, 0)
				    : ovf_err(-ENOMEM, "%s: out of memory", ps->name);
			}
		} else if (!strcmp(kind, "Strings") ||
			   !strcmp(kind, "DeploymentOptionSection")) {
			/* understood, not modelled */
		} else {
			r = other_section(ps, c, kind, "Envelope", &env->others,
					  &env->nothers);
		}
		free(kind);
		if (r < 0)
			return r;
	}
	if (!env->has_references)
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, "Envelope",
				"References element is missing (mandatory)");
	if (!env->content)
		ovf_finding_add(ps->findings, OVF_SEV_ERROR, "Envelope",
				"no VirtualSystem or VirtualSystemCollection (exactly one is mandatory)");
	resolve_capacities(ps);
	return 0;
}

/* SAX hook: any DOCTYPE stops the parse (no DTDs, no entities). */
static void refuse_dtd(void *ctx, const xmlChar *name, const xmlChar *ext,
		       const xmlChar *sys)
{
	xmlParserCtxtPtr ctxt = ctx;

	*(bool *)ctxt->_private = true;
	xmlStopParser(ctxt);
}

/* SAX hook: entity declarations are refused too (belt and braces). */
static void refuse_entity(void *ctx, const xmlChar *name, int type,
			  const xmlChar *pub, const xmlChar *sys,
			  xmlChar *content)
{
	refuse_dtd(ctx, name, pub, sys);
}

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

/* libxml2 wants one global initialisation before threads use it. */
static void xml_init(void)
{
	xmlInitParser();
}

/* Parses a descriptor from memory into a new envelope. */
int ovf_parse_descriptor(const void *buf, size_t len, const char *name,
			 struct ovf_envelope **out)
{
	struct ovf_envelope *env;
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;
	xmlNodePtr root;
	bool had_dtd = false;
	struct parse ps = { .name = name };
	int r;

	ovf_err_clear();
	if (len > OVF_DESCRIPTOR_MAX)
		return ovf_err(-EFBIG, "%s: descriptor is %zu bytes, more than the %u allowed",
			       name, len, OVF_DESCRIPTOR_MAX);
	if (len > INT32_MAX)
		return ovf_err(-EFBIG, "%s: descriptor too large", name);
	pthread_once(&xml_once, xml_init);
	ctxt = xmlNewParserCtxt();
	if (!ctxt)
		return ovf_err(-ENOMEM, "%s: out of memory", name);
	ctxt->_private = &had_dtd;
	ctxt->sax->internalSubset = refuse_dtd;
	ctxt->sax->externalSubset = refuse_dtd;
	ctxt->sax->entityDecl = refuse_entity;
	doc = xmlCtxtReadMemory(ctxt, buf, (int)len, name, NULL,
				XML_PARSE_NONET | XML_PARSE_NOERROR |
				XML_PARSE_NOWARNING | XML_PARSE_NOCDATA);
	if (had_dtd) {
		r = ovf_err(-EPERM, "%s: line %d: DOCTYPE refused: OVF descriptors have no DTD, and entities are not expanded",
			    name, ctxt->input ? ctxt->input->line : 0);
		goto err_free_doc;
	}
	if (!doc || !ctxt->wellFormed) {
		const xmlError *e = xmlCtxtGetLastError(ctxt);
		char msg[256] = "not well-formed XML";

		if (e && e->message) {
			snprintf(msg, sizeof(msg), "%s", e->message);
			msg[strcspn(msg, "\n")] = '\0';
		}
		r = ovf_err(-EINVAL, "%s: line %d: %s", name, e ? e->line : 0,
			    msg);
		goto err_free_doc;
	}
	root = xmlDocGetRootElement(doc);
	if (!root || strcmp((const char *)root->name, "Envelope") || !root->ns ||
	    (xmlStrcmp(root->ns->href, (const xmlChar *)NS_OVF1) &&
	     xmlStrcmp(root->ns->href, (const xmlChar *)NS_OVF2) &&
	     xmlStrcmp(root->ns->href, (const xmlChar *)NS_OVF09))) {
		r = ovf_err(-EINVAL, "%s: root element is <%s%s%s>, expected <Envelope> in namespace %s (or OVF 2 / 0.9)",
			    name, root ? (const char *)root->name : "(none)",
			    root && root->ns ? " xmlns=" : "",
			    root && root->ns ? (const char *)root->ns->href : "",
			    NS_OVF1);
		goto err_free_doc;
	}
	env = calloc(1, sizeof(*env));
	if (!env || !(env->parse_findings = calloc(1, sizeof(*env->parse_findings)))) {
		free(env);
		r = ovf_err(-ENOMEM, "%s: out of memory", name);
		goto err_free_doc;
	}
	env->ns = strdup((const char *)root->ns->href);
	env->version = strdup(!xmlStrcmp(root->ns->href, (const xmlChar *)NS_OVF2) ? "2.x"
			      : !xmlStrcmp(root->ns->href, (const xmlChar *)NS_OVF1) ? "1.x"
			      : "0.9");
	ps.ns = root->ns->href;
	ps.env = env;
	ps.findings = env->parse_findings;
	env->version_attr = attr(&ps, root, "version");
	r = parse_envelope(&ps, root);
	if (r < 0) {
		ovf_envelope_free(env);
		goto err_free_doc;
	}
	xmlFreeDoc(doc);
	xmlFreeParserCtxt(ctxt);
	*out = env;
	return 0;

err_free_doc:
	if (doc)
		xmlFreeDoc(doc);
	xmlFreeParserCtxt(ctxt);
	return r;
}

/* ---- Freeing ------------------------------------------------------------------- */

/* Frees a system and everything below it (not s itself). */
static void system_free(struct ovf_system *s)
{
	for (size_t i = 0; i < s->nitems; i++) {
		struct ovf_item *it = &s->items[i];

		free(it->element); free(it->kind); free(it->instance_id);
		free(it->element_name); free(it->description);
		free(it->resource_subtype); free(it->parent); free(it->address);
		free(it->address_on_parent); free(it->connection);
		free(it->host_resource); free(it->allocation_units);
		free(it->config_name);
	}
	free(s->items);
	for (size_t i = 0; i < s->nproducts; i++) {
		struct ovf_product *p = &s->products[i];

		for (size_t j = 0; j < p->nprops; j++) {
			struct ovf_property *pr = &p->props[j];

			free(pr->key); free(pr->type); free(pr->value);
			free(pr->label); free(pr->description); free(pr->qualifiers);
		}
		free(p->props);
		free(p->class_id); free(p->instance_id); free(p->product);
		free(p->vendor); free(p->version); free(p->full_version);
		free(p->product_url); free(p->vendor_url); free(p->app_url);
	}
	free(s->products);
	ovf_strv_free(s->eulas, s->neulas);
	for (size_t i = 0; i < s->nothers; i++) {
		free(s->others[i].ns); free(s->others[i].name);
		free(s->others[i].info);
	}
	free(s->others);
	for (size_t i = 0; i < s->nchildren; i++)
		system_free(&s->children[i]);
	free(s->children);
	free(s->id); free(s->name); free(s->info); free(s->hw_system_type);
	free(s->os_description); free(s->os_version); free(s->annotation);
}

/* Frees the envelope and its model. */
void ovf_envelope_free(struct ovf_envelope *env)
{
	if (!env)
		return;
	for (size_t i = 0; i < env->nfiles; i++) {
		free(env->files[i].id); free(env->files[i].href);
		free(env->files[i].compression);
	}
	free(env->files);
	for (size_t i = 0; i < env->ndisks; i++) {
		struct ovf_disk *d = &env->disks[i];

		free(d->disk_id); free(d->file_ref); free(d->format);
		free(d->parent_ref); free(d->capacity_text);
		free(d->capacity_units);
	}
	free(env->disks);
	free(env->disk_section_info);
	for (size_t i = 0; i < env->nnetworks; i++) {
		free(env->networks[i].name);
		free(env->networks[i].description);
	}
	free(env->networks);
	if (env->content) {
		system_free(env->content);
		free(env->content);
	}
	for (size_t i = 0; i < env->nothers; i++) {
		free(env->others[i].ns); free(env->others[i].name);
		free(env->others[i].info);
	}
	free(env->others);
	ovf_findings_free(env->parse_findings);
	free(env->parse_findings);
	free(env->version); free(env->version_attr); free(env->ns);
	free(env);
}

/* The File with ovf:id id, or NULL. */
const struct ovf_file *ovf_find_file(const struct ovf_envelope *env,
				     const char *id)
{
	for (size_t i = 0; id && i < env->nfiles; i++)
		if (env->files[i].id && !strcmp(env->files[i].id, id))
			return &env->files[i];
	return NULL;
}

/* The Disk with ovf:diskId id, or NULL. */
const struct ovf_disk *ovf_find_disk(const struct ovf_envelope *env,
				     const char *id)
{
	for (size_t i = 0; id && i < env->ndisks; i++)
		if (env->disks[i].disk_id && !strcmp(env->disks[i].disk_id, id))
			return &env->disks[i];
	return NULL;
}
