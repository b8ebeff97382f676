// The validator's pure checks with keys made here (ldns signs, the validator verifies):
// signatures, NSEC and NSEC3 denials, the DS-walk's cut proofs, trust anchor files.
#include "control/resolver/validator.h"

#include <gtest/gtest.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace tern::control::resolver {
namespace {

struct KeyListFree {
  void operator()(ldns_key_list* k) const { ldns_key_list_free(k); }
};

dns::Name N(const char* t) {
  dns::Name n;
  EXPECT_TRUE(dns::Name::from_text(t, n)) << t;
  return n;
}

dns::Rr R(const std::string& text) {
  ldns_rr* rr = nullptr;
  EXPECT_EQ(ldns_rr_new_frm_str(&rr, text.c_str(), 300, nullptr, nullptr), LDNS_STATUS_OK) << text;
  return dns::Rr(rr);
}

// A zone signing key for `zone`, ECDSA P-256, signatures valid [now-1h, now+1h] unless set.
class Signer {
 public:
  explicit Signer(const char* zone, int64_t from = -3600, int64_t to = 3600)
      : keys_(ldns_key_list_new()) {
    ldns_key* k = ldns_key_new_frm_algorithm(LDNS_SIGN_ECDSAP256SHA256, 256);
    ldns_key_set_pubkey_owner(k, N(zone).rdf().release());
    ldns_key_set_flags(k, 257);
    time_t now = time(nullptr);
    ldns_key_set_inception(k, uint32_t(now + from));
    ldns_key_set_expiration(k, uint32_t(now + to));
    ldns_rr* rr = ldns_key2rr(k);
    ldns_key_set_keytag(k, ldns_calc_keytag(rr));  // the RRSIGs' key tag field
    ldns_key_list_push_key(keys_.get(), k);
    dnskey_.reset(ldns_rr_list_new());
    ldns_rr_list_push_rr(dnskey_.get(), rr);
  }
  const ldns_rr_list* keys() const { return dnskey_.get(); }
  // The records of `rrs` followed by their RRSIGs, as the resolver keeps an RRset.
  dns::RrList sign(const std::vector<std::string>& rrs) {
    dns::RrList set(ldns_rr_list_new());
    for (auto& t : rrs) ldns_rr_list_push_rr(set.get(), R(t).release());
    dns::RrList sigs(ldns_sign_public(set.get(), keys_.get()));
    EXPECT_TRUE(sigs);
    for (size_t i = 0; sigs && i < ldns_rr_list_rr_count(sigs.get()); ++i)
      ldns_rr_list_push_rr(set.get(), ldns_rr_clone(ldns_rr_list_rr(sigs.get(), i)));
    return set;
  }
  // Several RRsets signed one by one, concatenated (an authority section's proof).
  dns::RrList sign_each(const std::vector<std::string>& rrs) {
    dns::RrList out(ldns_rr_list_new());
    for (auto& t : rrs) {
      dns::RrList s = sign({t});
      for (size_t i = 0; i < ldns_rr_list_rr_count(s.get()); ++i)
        ldns_rr_list_push_rr(out.get(), ldns_rr_clone(ldns_rr_list_rr(s.get(), i)));
    }
    return out;
  }

 private:
  std::unique_ptr<ldns_key_list, KeyListFree> keys_;
  dns::RrList dnskey_;
};

TEST(Validator, SignedRRsetIsSecure) {
  Signer z("example.");
  auto set = z.sign({"www.example. 300 IN A 192.0.2.1", "www.example. 300 IN A 192.0.2.2"});
  Outcome o = check_rrset(set.get(), N("example."), z.keys(), time(nullptr));
  EXPECT_EQ(o.sec, Security::secure);
  // Cached TTLs count down; the signature covers the original TTL (RFC 4035 §5.3.3).
  for (size_t i = 0; i < ldns_rr_list_rr_count(set.get()); ++i) ldns_rr_set_ttl(ldns_rr_list_rr(set.get(), i), 17);
  EXPECT_EQ(check_rrset(set.get(), N("example."), z.keys(), time(nullptr)).sec, Security::secure);
}

TEST(Validator, SignatureMemoNeverVouchesForOtherData) {
  Signer z("example.");
  SigMemo memo;
  auto set = z.sign({"www.example. 300 IN A 192.0.2.1"});
  EXPECT_EQ(check_rrset(set.get(), N("example."), z.keys(), time(nullptr), &memo).sec, Security::secure);
  EXPECT_EQ(memo.size(), 1u);
  EXPECT_EQ(check_rrset(set.get(), N("example."), z.keys(), time(nullptr), &memo).sec, Security::secure);
  // The same RRSIG over changed data, or checked after it expired, is not taken from the memo.
  ldns_rr* a = ldns_rr_list_rr(set.get(), 0);
  ldns_rdf_deep_free(ldns_rr_set_rdf(a, ldns_rdf_new_frm_str(LDNS_RDF_TYPE_A, "192.0.2.99"), 0));
  EXPECT_EQ(check_rrset(set.get(), N("example."), z.keys(), time(nullptr), &memo).sec, Security::bogus);
  ldns_rdf_deep_free(ldns_rr_set_rdf(a, ldns_rdf_new_frm_str(LDNS_RDF_TYPE_A, "192.0.2.1"), 0));
  EXPECT_EQ(check_rrset(set.get(), N("example."), z.keys(), time(nullptr) + 7200, &memo).ede,
            ede::signature_expired);
}

TEST(Validator, ChangedDataIsBogus) {
  Signer z("example.");
  auto set = z.sign({"www.example. 300 IN A 192.0.2.1"});
  ldns_rr* a = ldns_rr_list_rr(set.get(), 0);
  ldns_rdf_deep_free(ldns_rr_set_rdf(a, ldns_rdf_new_frm_str(LDNS_RDF_TYPE_A, "192.0.2.99"), 0));
  Outcome o = check_rrset(set.get(), N("example."), z.keys(), time(nullptr));
  EXPECT_EQ(o.sec, Security::bogus);
  EXPECT_EQ(o.ede, ede::dnssec_bogus);
}

TEST(Validator, MissingExpiredAndForeignSignaturesHaveTheirEde) {
  Signer z("example.");
  dns::RrList bare(ldns_rr_list_new());
  ldns_rr_list_push_rr(bare.get(), R("www.example. 300 IN A 192.0.2.1").release());
  EXPECT_EQ(check_rrset(bare.get(), N("example."), z.keys(), time(nullptr)).ede, ede::rrsigs_missing);

  Signer old("example.", -7200, -3600);
  auto set = old.sign({"www.example. 300 IN A 192.0.2.1"});
  Outcome o = check_rrset(set.get(), N("example."), old.keys(), time(nullptr));
  EXPECT_EQ(o.sec, Security::bogus);
  EXPECT_EQ(o.ede, ede::signature_expired);
  Signer future("example.", 3600, 7200);
  set = future.sign({"www.example. 300 IN A 192.0.2.1"});
  EXPECT_EQ(check_rrset(set.get(), N("example."), future.keys(), time(nullptr)).ede,
            ede::signature_not_yet_valid);

  // Signed by another key of the zone than the ones trusted: no DNSKEY for that tag.
  Signer other("example.");
  set = other.sign({"www.example. 300 IN A 192.0.2.1"});
  EXPECT_EQ(check_rrset(set.get(), N("example."), z.keys(), time(nullptr)).ede, ede::dnskey_missing);
  // A signature by another zone's name is no signature of this zone at all.
  EXPECT_EQ(check_rrset(set.get(), N("other."), z.keys(), time(nullptr)).ede, ede::rrsigs_missing);
}

// example. -> a.example. -> m.example. -> example.  (NSEC chain, RFC 4034 §4)
std::vector<std::string> nsec_chain() {
  return {"example. 300 IN NSEC a.example. NS SOA RRSIG NSEC DNSKEY",
          "a.example. 300 IN NSEC m.example. A RRSIG NSEC",
          "m.example. 300 IN NSEC example. NS RRSIG NSEC"};
}

TEST(Validator, NsecProvesNxdomainOnlyWithTheWildcardDenied) {
  Signer z("example.");
  auto chain = nsec_chain();
  auto all = z.sign_each(chain);
  time_t now = time(nullptr);
  // c.example: covered by a->m; *.example covered by example->a.
  EXPECT_EQ(check_denial(N("c.example."), 1, true, all.get(), N("example."), z.keys(), now, 150).sec,
            Security::secure);
  auto no_wc = z.sign_each({chain[1]});
  Outcome o = check_denial(N("c.example."), 1, true, no_wc.get(), N("example."), z.keys(), now, 150);
  EXPECT_EQ(o.sec, Security::bogus);
  EXPECT_EQ(o.ede, ede::nsec_missing);
  // a.example exists: no NSEC can prove it does not.
  EXPECT_EQ(check_denial(N("a.example."), 1, true, all.get(), N("example."), z.keys(), now, 150).sec,
            Security::bogus);
  // An unsigned proof proves nothing.
  dns::RrList unsigned_proof(ldns_rr_list_new());
  for (auto& t : chain) ldns_rr_list_push_rr(unsigned_proof.get(), R(t).release());
  EXPECT_EQ(check_denial(N("c.example."), 1, true, unsigned_proof.get(), N("example."), z.keys(), now, 150).ede,
            ede::rrsigs_missing);
}

TEST(Validator, ParentNsecSaysNothingBelowADelegation) {
  // m.example NSEC example. NS: x.m.example sorts between m.example and the apex, but it is
  // in the child zone; the parent's NSEC must not deny it (RFC 6840 §4.1).
  Signer z("example.");
  auto all = z.sign_each(nsec_chain());
  EXPECT_EQ(check_denial(N("x.m.example."), 1, true, all.get(), N("example."), z.keys(), time(nullptr), 150).sec,
            Security::bogus);
}

TEST(Validator, NsecProvesNodataByTheBitmap) {
  Signer z("example.");
  auto all = z.sign_each(nsec_chain());
  time_t now = time(nullptr);
  EXPECT_EQ(check_denial(N("a.example."), 16, false, all.get(), N("example."), z.keys(), now, 150).sec,
            Security::secure);  // a.example TXT: not in the bitmap
  EXPECT_EQ(check_denial(N("a.example."), 1, false, all.get(), N("example."), z.keys(), now, 150).sec,
            Security::bogus);  // a.example A: the bitmap says it exists
}

TEST(Validator, DsDenialTellsAnInsecureCutFromNoCut) {
  Signer z("example.");
  auto all = z.sign_each(nsec_chain());
  time_t now = time(nullptr);
  // m.example: NS without DS: an unsigned delegation (RFC 4035 §5.2).
  EXPECT_EQ(check_no_ds(N("m.example."), all.get(), N("example."), z.keys(), now, 150).kind,
            CutProof::insecure_cut);
  // a.example: data, no NS: not a zone cut. c.example: no such name.
  EXPECT_EQ(check_no_ds(N("a.example."), all.get(), N("example."), z.keys(), now, 150).kind, CutProof::no_cut);
  EXPECT_EQ(check_no_ds(N("c.example."), all.get(), N("example."), z.keys(), now, 150).kind, CutProof::no_cut);
  // A "no DS" whose bitmap lists DS contradicts itself.
  auto liar = z.sign_each({"m.example. 300 IN NSEC example. NS DS RRSIG NSEC"});
  EXPECT_EQ(check_no_ds(N("m.example."), liar.get(), N("example."), z.keys(), now, 150).kind, CutProof::bogus);
}

TEST(Validator, WildcardExpansionNeedsTheNoCloserMatchProof) {
  Signer z("example.");
  auto all = z.sign_each(nsec_chain());
  time_t now = time(nullptr);
  EXPECT_EQ(check_wildcard(N("c.example."), 1, all.get(), N("example."), z.keys(), now, 150).sec,
            Security::secure);
  EXPECT_EQ(check_wildcard(N("c.example."), 1, nullptr, N("example."), z.keys(), now, 150).sec,
            Security::bogus);
}

// NSEC3 (RFC 5155) records for `names` in example., no salt, `iter` iterations.
std::vector<std::string> nsec3_chain(const std::vector<std::string>& names, uint16_t iter,
                                     const std::vector<std::string>& bitmaps, bool optout = false) {
  std::vector<std::pair<std::string, std::string>> h;  // hash, bitmap
  for (size_t i = 0; i < names.size(); ++i) {
    dns::Rdf l(ldns_nsec3_hash_name(N(names[i].c_str()).rdf().get(), 1, iter, 0, nullptr));
    char* t = ldns_rdf2str(l.get());
    std::string s(t);
    free(t);
    s = s.substr(0, s.find('.'));
    for (char& c : s) c = char(tolower(c));
    h.emplace_back(s, bitmaps[i]);
  }
  std::sort(h.begin(), h.end());
  std::vector<std::string> out;
  for (size_t i = 0; i < h.size(); ++i)
    out.push_back(h[i].first + ".example. 300 IN NSEC3 1 " + (optout ? "1 " : "0 ") +
                  std::to_string(iter) + " - " + h[(i + 1) % h.size()].first + " " + h[i].second);
  return out;
}

TEST(Validator, Nsec3ProvesNxdomainNodataAndOptOut) {
  Signer z("example.");
  time_t now = time(nullptr);
  auto recs = nsec3_chain({"example.", "a.example.", "m.example."}, 0,
                          {"NS SOA RRSIG DNSKEY NSEC3PARAM", "A RRSIG", "NS"});
  auto all = z.sign_each(recs);
  EXPECT_EQ(check_denial(N("a.example."), 16, false, all.get(), N("example."), z.keys(), now, 150).sec,
            Security::secure);
  EXPECT_EQ(check_denial(N("a.example."), 1, false, all.get(), N("example."), z.keys(), now, 150).sec,
            Security::bogus);
  // NXDOMAIN: closest encloser example. matches, next closer and *.example are covered
  // (with three hashes every other hash is covered by some record).
  EXPECT_EQ(check_denial(N("nx.example."), 1, true, all.get(), N("example."), z.keys(), now, 150).sec,
            Security::secure);
  EXPECT_EQ(check_no_ds(N("m.example."), all.get(), N("example."), z.keys(), now, 150).kind,
            CutProof::insecure_cut);
  auto oo = z.sign_each(nsec3_chain({"example.", "a.example."}, 0, {"NS SOA RRSIG", "A RRSIG"}, true));
  EXPECT_EQ(check_no_ds(N("unsigned.example."), oo.get(), N("example."), z.keys(), now, 150).kind,
            CutProof::insecure_cut) << "an opt-out span may hide an unsigned delegation";
}

TEST(Validator, Nsec3IterationsAboveTheCapAreInsecure) {
  Signer z("example.");
  auto all = z.sign_each(nsec3_chain({"example.", "a.example."}, 200, {"NS SOA RRSIG", "A RRSIG"}));
  Outcome o = check_denial(N("nx.example."), 1, true, all.get(), N("example."), z.keys(), time(nullptr), 150);
  EXPECT_EQ(o.sec, Security::insecure);  // RFC 9276 §3.2
  EXPECT_EQ(o.ede, ede::unsupported_nsec3_iterations);
  EXPECT_EQ(check_denial(N("nx.example."), 1, true, all.get(), N("example."), z.keys(), time(nullptr), 500).sec,
            Security::secure);
}

TEST(Validator, AlgorithmsAndDigests) {
  EXPECT_TRUE(algorithm_supported(8));
  EXPECT_TRUE(algorithm_supported(13));
  EXPECT_FALSE(algorithm_supported(1));    // RSAMD5: MUST NOT (RFC 8624)
  EXPECT_FALSE(algorithm_supported(200));
  EXPECT_TRUE(digest_supported(2));
  EXPECT_FALSE(digest_supported(3));       // GOST: not implemented
}

TEST(TrustAnchors, ParsesDsAndDnskeyAndRejectsOtherRecords) {
  TrustAnchors ta;
  std::string err;
  ASSERT_TRUE(ta.parse("; comment\n"
                       ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n"
                       "\n"
                       "example. 3600 IN DS 1 13 2 0000000000000000000000000000000000000000000000000000000000000000\n",
                       err))
      << err;
  ASSERT_EQ(ta.all().size(), 2u);
  EXPECT_TRUE(ta.find(N("www.example."))->zone.equals(N("example.")));
  EXPECT_TRUE(ta.find(N("www.other."))->zone.is_root());
  EXPECT_FALSE(ta.parse("example. IN A 192.0.2.1\n", err));
  EXPECT_NE(err.find("line 1"), std::string::npos) << err;
  EXPECT_FALSE(ta.parse("this is not a record\n", err));
}

}  // namespace
}  // namespace tern::control::resolver

namespace tern::control::resolver {
namespace {

TEST(TrustAnchors, Rfc5011AddsANewKskAfterTheHoldDownAndDropsARevokedOne) {
  char tmpl[] = "/tmp/tern-ta-test.XXXXXX";
  ASSERT_TRUE(mkdtemp(tmpl));
  const std::string dir = tmpl;
  Signer old_ksk("example."), new_ksk("example.");
  const ldns_rr* k1 = ldns_rr_list_rr(old_ksk.keys(), 0);
  const ldns_rr* k2 = ldns_rr_list_rr(new_ksk.keys(), 0);
  dns::Rr ds(ldns_key_rr2ds(k1, LDNS_SHA256));
  char* dtext = ldns_rr2str(ds.get());
  std::ofstream(dir + "/shipped.key") << dtext;
  free(dtext);

  TrustAnchors ta;
  std::string err;
  ASSERT_TRUE(ta.load_managed(dir + "/shipped.key", dir + "/m/managed.key", err)) << err;
  dns::RrList both(ldns_rr_list_new());
  ldns_rr_list_push_rr(both.get(), ldns_rr_clone(k1));
  ldns_rr_list_push_rr(both.get(), ldns_rr_clone(k2));
  const uint32_t hold = 100;
  EXPECT_TRUE(ta.observe(N("example."), both.get(), old_ksk.keys(), 1000, hold, err));
  EXPECT_EQ(ta.pending(), 1u);
  EXPECT_FALSE(ta.observe(N("example."), both.get(), old_ksk.keys(), 1099, hold, err));
  EXPECT_EQ(ldns_rr_list_rr_count(ta.find(N("example."))->rrs.get()), 1u) << "still in hold-down";

  // A restart in the middle of the hold-down keeps the first-seen time (managed file).
  TrustAnchors again;
  ASSERT_TRUE(again.load_managed(dir + "/shipped.key", dir + "/m/managed.key", err)) << err;
  EXPECT_EQ(again.pending(), 1u);
  EXPECT_TRUE(again.observe(N("example."), both.get(), old_ksk.keys(), 1100, hold, err));
  EXPECT_EQ(again.pending(), 0u);
  EXPECT_EQ(ldns_rr_list_rr_count(again.find(N("example."))->rrs.get()), 2u) << "added after the hold-down";
  EXPECT_NE(again.render().find("DNSKEY"), std::string::npos);

  // The new key revokes itself (RFC 5011 §2.1): it signed the set with the REVOKE bit on.
  dns::RrList revoked(ldns_rr_list_new());
  ldns_rr* r = ldns_rr_clone(k2);
  ldns_rdf_deep_free(ldns_rr_set_rdf(r, ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, 257 | 0x80), 0));
  ldns_rr_list_push_rr(revoked.get(), r);
  EXPECT_TRUE(again.observe(N("example."), revoked.get(), revoked.get(), 1200, hold, err));
  EXPECT_EQ(ldns_rr_list_rr_count(again.find(N("example."))->rrs.get()), 1u) << "revoked key removed";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tern::control::resolver
