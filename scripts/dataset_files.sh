# Sourced by sft.sh, rl.sh and evaluate.sh: the data files of a category under a data root, in
# either layout (prep/layout.py describes both):
#   the original's  ROOT/train/<category>*11.csv (valid/, test/ alike), ROOT/info/<category>*.txt,
#                   ROOT/index/<category>.index.json and ROOT/index/<category>.item.json
#   ours            ROOT/<category>/{train,valid,test}.csv, info.txt, index.json, item.json
# and the launch settings they share.

# the categories under a data root, one per line: in the original's layout, the names of
# index/<category>.index.json and info/<category>_<k>_<window>.txt files; in ours, the folders holding a test.csv
dataset_categories() {
    local root=$1 path
    if [[ -d "$root/index" || -d "$root/info" ]]; then
        {
            for path in "$root"/index/*.index.json; do
                [[ -f "$path" ]] && basename "$path" .index.json
            done
            for path in "$root"/info/*.txt; do
                [[ -f "$path" ]] && basename "$path" | sed -E 's/_[0-9]+_[0-9]+-[0-9]+-[0-9]+-[0-9]+\.txt$//'
            done
        } | sort -u
    else
        for path in "$root"/*/; do
            [[ -f "$path/test.csv" ]] && basename "$path"
        done
    fi
    return 0
}

# the first file matching the first of the glob patterns $1 $2 ... that matches a file (nothing when none does)
_first_match() {
    local pattern path
    for pattern in "$@"; do
        path=$(compgen -G "$pattern" | head -1 || true)
        [[ -n "$path" && -f "$path" ]] && { echo "$path"; return 0; }
    done
    return 0
}

# sets train_file eval_file test_file info_file index_file item_file for category $2 under root $1;
# returns 1 (after naming what is missing) when one of the files it is asked for ($3...: train eval
# test info index item) is not there
dataset_files() {
    local root=$1 category=$2 kind missing=()
    shift 2
    if [[ -d "$root/$category" ]]; then
        train_file=$root/$category/train.csv
        eval_file=$root/$category/valid.csv
        test_file=$root/$category/test.csv
        info_file=$root/$category/info.txt
        index_file=$root/$category/index.json
        item_file=$root/$category/item.json
    else
        # the original's scripts take the first `ls <split>/<category>*11.csv`
        train_file=$(_first_match "$root/train/$category*11.csv" "$root/train/$category*.csv")
        eval_file=$(_first_match "$root/valid/$category*11.csv" "$root/valid/$category*.csv")
        test_file=$(_first_match "$root/test/$category*11.csv" "$root/test/$category*.csv")
        info_file=$(_first_match "$root/info/$category*.txt")
        index_file=$root/index/$category.index.json
        item_file=$root/index/$category.item.json
    fi
    for kind in "$@"; do
        local var="${kind}_file"
        [[ -n "${!var}" && -f "${!var}" ]] || missing+=("$kind")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "Error: category $category under $root: no ${missing[*]} file (expected $root/$category/{train,valid,test}.csv," \
             "info.txt, index.json, item.json, or the original's $root/{train,valid,test}/$category*11.csv," \
             "info/$category*.txt, index/$category.index.json, index/$category.item.json)" >&2
        return 1
    fi
    return 0
}

# the number of GPUs (0 without nvidia-smi)
gpu_count() {
    (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true
}

# The script's own "--flag value" pairs, then the caller's arguments, without the pairs whose flag
# the caller gives (sft.py / rl.py refuse a repeated flag): `bash sft.sh --base_model M` overrides
# BASE_MODEL as the original's README writes it. Usage: merge_flags OWN_PAIRS... -- "$@"; the
# result is the array MERGED.
merge_flags() {
    local -a own=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do
        own+=("$1")
        shift
    done
    [[ $# -gt 0 ]] && shift
    MERGED=()
    local i word given
    for ((i = 0; i < ${#own[@]}; i += 2)); do
        given=0
        for word in "$@"; do
            [[ "$word" == "${own[i]}" || "$word" == "${own[i]}="* ]] && given=1
        done
        [[ $given = 1 ]] || MERGED+=("${own[i]}" "${own[i + 1]}")
    done
    MERGED+=("$@")
}
