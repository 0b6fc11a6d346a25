#pragma once
// Masks secrets in text meant for people: log lines, absl::Status messages,
// what `zerobusctl status` shows. Text from outside the process (an HTTP body
// that echoes our request, a proxy's error page) may carry a secret in any
// encoding, so each secret is searched for as itself and in every form a
// server, proxy or library commonly re-encodes it into; and the values of
// credential-shaped fields are masked whatever they hold.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace zb {

// Immutable after construction: Redact may be called from any thread.
// Copyable (a copy holds its own needles).
class Redactor {
 public:
  // What every masked value becomes.
  static constexpr absl::string_view kMask = "[REDACTED]";
  // A secret's base64 inside a longer base64 string (three byte alignments)
  // is only searched for when that core is at least this long: shorter cores
  // would mask unrelated text by chance.
  static constexpr size_t kMinEmbeddedChars = 8;

  // `secrets` are exact byte strings; empty ones are ignored. Each is masked
  // wherever it appears:
  //  - as itself;
  //  - base64-encoded: standard and URL-safe alphabets, padded or not, and at
  //    each of the three byte alignments inside a longer base64 string;
  //  - any of those forms percent-encoded (either hex case, '+' for space),
  //    JSON-escaped (\uXXXX in either case, surrogate pairs, \/) or
  //    HTML-escaped (&amp;, &#NN;, &#xHH;).
  // For HTTP Basic credentials pass both the secret and "id:secret": the
  // header carries the base64 of the pair, in which the secret's own base64
  // does not appear. A very short secret masks much unrelated text: that is
  // accepted (fail closed).
  explicit Redactor(std::vector<std::string> secrets = {});

  // This redactor plus `more` secrets (e.g. tokens fetched since).
  Redactor With(const std::vector<std::string>& more) const;

  // `text` with every secret masked and, whatever the secrets, the values of
  // credential-shaped fields, which may hold secrets this redactor was never
  // told:
  //  - Authorization and Proxy-Authorization values, as a header line, JSON
  //    member or form field; the scheme is kept ("Authorization: Basic
  //    [REDACTED]");
  //  - "Bearer <token>", and "Basic <base64 of user:password>";
  //  - values of access_token, refresh_token, id_token, client_secret,
  //    client_assertion and password (JSON members or form fields);
  //  - JSON Web Tokens (eyJ...).
  // A quoted value that is never closed is masked to the end of `text`.
  // `text_is_prefix`: `text` is the start of something longer (a capped
  // capture), so a secret or token that `text` ends in the middle of is
  // masked too. A mask already in `text` stays one unit: redacting again
  // reveals nothing and usually changes nothing (it may mask a little more
  // where an earlier mask hid the byte that ended a field value).
  std::string Redact(absl::string_view text, bool text_is_prefix = false) const;

  // `status` with its message redacted; the code is kept, payloads dropped.
  absl::Status RedactStatus(const absl::Status& status) const;

  // A byte range [begin, end) of a text, to be masked.
  struct Range {
    size_t begin;
    size_t end;
  };

 private:
  // Derives needles_ (every searched form) from secrets_ and indexes them.
  void Build();
  // Appends where the secrets appear in `text`.
  void FindSecrets(absl::string_view text, bool text_is_prefix, std::vector<Range>* found) const;

  std::vector<std::string> secrets_;
  std::vector<std::string> needles_;  // decoded byte strings to find
  // Needle indices by first byte: a text position is only tried against the
  // needles its decoded first byte can start.
  std::array<std::vector<uint32_t>, 256> by_first_byte_;
};

// Quotes untrusted text (an HTTP response body) on one line of a message.
// Redacts first, then keeps at most `max_bytes` of the result, so a secret
// that the cut would split in two was already masked whole; then escapes
// control bytes, non-ASCII bytes and '\' as \xNN so the text cannot forge log
// lines. When anything was left out, appends " ... [N bytes in all]".
// `total_bytes`: the size of the whole original when `text` is only its
// prefix (a capped capture), which also makes the redaction treat `text` as
// a prefix; 0 (or text.size()) when `text` is all of it. Only the first
// max(4096, 8 * max_bytes) bytes are redacted (as a prefix), so the work is
// bounded whatever the size of `text`.
std::string RedactedExcerpt(const Redactor& redactor, absl::string_view text, size_t max_bytes,
                            size_t total_bytes = 0);

}  // namespace zb
