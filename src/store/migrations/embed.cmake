# Turns every migrations/NNNN_name.sql into one entry of a generated C++ table
# (store/migrations.h), at configure time. Editing or adding a .sql file re-runs configure.
function(segma_embed_migrations OUT_CC)
  file(GLOB sql_files CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/migrations/*.sql)
  list(SORT sql_files)
  set(entries "")
  foreach(sql_file ${sql_files})
    get_filename_component(name ${sql_file} NAME_WE)
    if(NOT name MATCHES "^([0-9]+)_[a-z0-9_]+$")
      message(FATAL_ERROR "migration file name must be NNNN_name.sql: ${sql_file}")
    endif()
    string(REGEX REPLACE "^0+" "" version "${CMAKE_MATCH_1}")
    file(READ ${sql_file} sql)
    if(sql MATCHES "\\)segma_sql\"")
      message(FATAL_ERROR "${sql_file} contains the raw-string delimiter )segma_sql\"")
    endif()
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${sql_file})
    string(APPEND entries "    {${version}, \"${name}\", R\"segma_sql(${sql})segma_sql\"},\n")
  endforeach()
  set(content "// Generated from src/store/migrations/*.sql by embed.cmake. Do not edit.
#include \"store/migrations.h\"

namespace segma::store {

const std::vector<Migration>& EmbeddedMigrations() {
  static const std::vector<Migration> kMigrations = {
${entries}  };
  return kMigrations;
}

}  // namespace segma::store
")
  file(CONFIGURE OUTPUT ${OUT_CC} CONTENT "${content}" @ONLY)
endfunction()
